// zstd level sweep on HDF5-shuffled chunks, as fineshard's HDF5 writer makes them (issue 17 item 1):
// 1 MiB chunks of a file's bytes, shuffled into byte planes (HDF5's shuffle filter), each compressed
// into one frame with a checksum; prints single-thread CPU MB/s and uncompressed/compressed per level,
// with zstd's own literal mode and with Huffman-coded literals forced on (what fineshard does).
//
//   cc -O2 -o /tmp/zstd_levels scripts/bench/zstd_levels.c -lzstd
//   /tmp/zstd_levels FILE OFFSET BYTES ELEMENT_SIZE     (e.g. a bf16 safetensors file, 300000000 268435456 2)
#define ZSTD_STATIC_LINKING_ONLY
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <zstd.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: %s FILE OFFSET BYTES ELEMENT_SIZE\n", argv[0]); return 2; }
    long offset = atol(argv[2]), total = atol(argv[3]);
    size_t size = (size_t)atoi(argv[4]), chunk = 1 << 20, n = chunk / size;
    unsigned char *source = malloc(total), *planes = malloc(chunk), *frame = malloc(ZSTD_compressBound(chunk));
    FILE *f = fopen(argv[1], "rb");
    if (!f || fseek(f, offset, SEEK_SET) != 0 || fread(source, 1, total, f) != (size_t)total) { perror(argv[1]); return 1; }
    fclose(f);
    int levels[] = {-1000, -100, -50, -20, -5, -1, 1, 2, 3};
    for (int huffman = 0; huffman < 2; huffman++) {
        for (size_t l = 0; l < sizeof levels / sizeof *levels; l++) {
            if (huffman && levels[l] > 0) continue;  // positive levels code literals with Huffman anyway
            ZSTD_CCtx *c = ZSTD_createCCtx();
            ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, levels[l]);
            ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
            if (huffman) ZSTD_CCtx_setParameter(c, ZSTD_c_literalCompressionMode, ZSTD_ps_enable);
            double start = cpu_seconds();
            size_t out = 0;
            for (long p = 0; p + (long)chunk <= total; p += chunk) {
                for (size_t i = 0; i < n; i++)
                    for (size_t j = 0; j < size; j++) planes[j * n + i] = source[p + i * size + j];
                size_t r = ZSTD_compress2(c, frame, ZSTD_compressBound(chunk), planes, chunk);
                if (ZSTD_isError(r)) { fprintf(stderr, "%s\n", ZSTD_getErrorName(r)); return 1; }
                out += r;
            }
            double seconds = cpu_seconds() - start;
            printf("| %d%s | %.0f | %.3f |\n", levels[l], huffman ? " + Huffman literals" : "", total / seconds / 1e6,
                   (double)total / out);
            ZSTD_freeCCtx(c);
        }
    }
    return 0;
}
