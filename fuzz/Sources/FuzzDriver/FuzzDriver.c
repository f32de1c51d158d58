// Header-only module: LLVMFuzzerRunDriver comes from libFuzzer (-sanitize=fuzzer).
#include "FuzzDriver.h"
