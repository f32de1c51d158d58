#ifndef FINESHARD_CLINUX_SHIM_H
#define FINESHARD_CLINUX_SHIM_H
// Linux system calls that Swift's Glibc module does not import (they need _GNU_SOURCE), and the
// guard that keeps a source file shrinking under a mapping from killing the process.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/// syncfs(2): flush every dirty page of the filesystem holding `fd`.
static inline int fs_syncfs(int fd) { return syncfs(fd); }

// Mapped source ranges. Touching a page of a mapping past the end of its file raises SIGBUS; inside a
// registered range the handler maps a zero page there instead and marks the range, so the reader
// can report the file as changed (docs/SPEC.md: bad input never crashes). Used only by
// FineShardSystem's MappedRegion.
#define FS_GUARD_SLOTS 1024
struct fs_guard_table {
    _Atomic uintptr_t start[FS_GUARD_SLOTS];
    _Atomic uintptr_t end[FS_GUARD_SLOTS];
    _Atomic int hit[FS_GUARD_SLOTS];
};

// A function-local static: Swift emits the functions of this header, not its global variables.
static inline struct fs_guard_table *fs_guard(void) {
    static struct fs_guard_table table;
    return &table;
}

static void fs_guard_handler(int sig, siginfo_t *info, void *context) {
    (void)context;
    uintptr_t address = (uintptr_t)info->si_addr;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < FS_GUARD_SLOTS; i++) {
        uintptr_t start = atomic_load(&fs_guard()->start[i]);
        if (start <= 1 || address < start || address >= atomic_load(&fs_guard()->end[i])) continue;
        void *at = (void *)(address & ~(page - 1));
        if (mmap(at, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
            atomic_store(&fs_guard()->hit[i], 1);
            return;
        }
        break;
    }
    signal(sig, SIG_DFL);
}

/// Installs the SIGBUS handler (once; later calls do nothing).
static inline void fs_guard_install(void) {
    static atomic_flag installed = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&installed)) return;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = fs_guard_handler;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    sigaction(SIGBUS, &action, NULL);
}

/// Registers [start, start + length); returns its slot, or -1 when every slot is taken.
static inline int fs_guard_register(const void *start, size_t length) {
    for (int i = 0; i < FS_GUARD_SLOTS; i++) {
        uintptr_t expected = 0;
        // A slot is claimed with a start of 1 until its end is set.
        if (!atomic_compare_exchange_strong(&fs_guard()->start[i], &expected, (uintptr_t)1)) continue;
        atomic_store(&fs_guard()->hit[i], 0);
        atomic_store(&fs_guard()->end[i], (uintptr_t)start + length);
        atomic_store(&fs_guard()->start[i], (uintptr_t)start);
        return i;
    }
    return -1;
}

/// Frees a slot; returns 1 if a page of its range was past the end of the file.
static inline int fs_guard_unregister(int slot) {
    int hit = atomic_load(&fs_guard()->hit[slot]);
    atomic_store(&fs_guard()->end[slot], 0);
    atomic_store(&fs_guard()->start[slot], 0);
    return hit;
}

/// 1 if a page of the slot's range was past the end of the file.
static inline int fs_guard_was_hit(int slot) { return atomic_load(&fs_guard()->hit[slot]); }

static inline void *fs_map_failed(void) { return MAP_FAILED; }

#endif
