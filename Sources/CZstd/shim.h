#ifndef FINESHARD_CZSTD_SHIM_H
#define FINESHARD_CZSTD_SHIM_H
#include <zstd.h>
#endif
