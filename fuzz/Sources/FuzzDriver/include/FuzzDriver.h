// libFuzzer's driver entry (compiler-rt FuzzerInterface.h). SwiftPM links an executable target
// with `--defsym main=<Target>_main`, which hides libFuzzer's own main, so each target's
// `<Target>_main` hands its arguments to this driver instead.
#include <stddef.h>
#include <stdint.h>

typedef int (*FuzzDriverTestOneInput)(const uint8_t *data, size_t size);
int LLVMFuzzerRunDriver(int *argc, char ***argv, FuzzDriverTestOneInput callback);
