#ifndef FINESHARD_CLINUX_SHIM_H
#define FINESHARD_CLINUX_SHIM_H
// Linux system calls that Swift's Glibc module does not import (they need _GNU_SOURCE).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <unistd.h>

/// syncfs(2): flush every dirty page of the filesystem holding `fd`.
static inline int fs_syncfs(int fd) { return syncfs(fd); }

#endif
