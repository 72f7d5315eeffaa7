/*
 * latent-shards: a bounds-checked decoder for the rANS streams CompressAI's coder writes.
 *
 * Stream format (CompressAI 1.2 `compressai.ans`, itself on Fabian Giesen's 64-bit rANS):
 *   - 64-bit state, renormalised with 32-bit little-endian words, lower bound 2^31;
 *   - 16-bit probability precision: each symbol's table is a CDF over [0, 2^16];
 *   - the last entry of a table is an escape: the value follows in 4-bit "bypass" chunks
 *     (a chunk count, continued while it reads 15, then the chunks, least significant first),
 *     zig-zag mapped below/above the table's range.
 *
 * Why a second decoder: CompressAI's binding converts every index and every CDF table from
 * Python lists on each call, searches each table linearly, holds the GIL, and reads past
 * the end of a damaged stream. This one takes numpy buffers (no marshalling), searches by
 * bisection, is called through ctypes (which releases the GIL), and never reads outside the
 * stream. It produces exactly the reference decoder's symbols (tests compare both over many
 * images, every model family, and forced escapes).
 *
 * Plain C99, no Python headers: compiled on first use by pipeline/codec/fast_rans.py.
 */
#include <stddef.h>
#include <stdint.h>

#define PRECISION 16
#define BYPASS_BITS 4
#define BYPASS_MAX ((1 << BYPASS_BITS) - 1)
#define RANS_L (1ull << 31)

enum {
    LS_OK = 0,
    LS_SHORT_STREAM = -1, /* the stream ended before every symbol was decoded */
    LS_BAD_INDEX = -2,    /* a CDF index outside the tables */
    LS_BAD_BYPASS = -3,   /* an escaped value too long to be genuine */
};

typedef struct {
    uint64_t x;
    const uint8_t *p;
    const uint8_t *end;
} state_t;

static inline int read_word(state_t *s, uint32_t *w) {
    if (s->end - s->p < 4) return LS_SHORT_STREAM;
    const uint8_t *p = s->p;
    *w = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    s->p += 4;
    return LS_OK;
}

static inline int renorm(state_t *s) {
    if (s->x < RANS_L) {
        uint32_t w;
        if (read_word(s, &w)) return LS_SHORT_STREAM;
        s->x = (s->x << 32) | w;
    }
    return LS_OK;
}

static inline int get_bits(state_t *s, uint32_t nbits, int32_t *val) {
    *val = (int32_t)(s->x & ((1u << nbits) - 1));
    s->x >>= nbits;
    return renorm(s);
}

/*
 * Decode `n` symbols of `stream` whose CDF tables are `indexes[i]`.
 *
 * cdfs:      [ntables, stride] int32, row t holds sizes[t] increasing entries, 0 ... 2^16
 * sizes:     [ntables] entries used per row (the last symbol, sizes[t] - 2, is the escape)
 * offsets:   [ntables] value of symbol 0
 * out:       [n] decoded values (symbol + offset)
 * Returns LS_OK or a negative error code; `out` is then incomplete.
 */
int ls_rans_decode(const uint8_t *stream, int64_t nbytes, const int32_t *indexes, int64_t n,
                   const int32_t *cdfs, int32_t stride, const int32_t *sizes,
                   const int32_t *offsets, int32_t ntables, int32_t *out) {
    state_t s = {0, stream, stream + nbytes};
    uint32_t lo, hi;
    if (read_word(&s, &lo) || read_word(&s, &hi)) return LS_SHORT_STREAM;
    s.x = (uint64_t)lo | ((uint64_t)hi << 32);
    const uint64_t mask = (1ull << PRECISION) - 1;

    for (int64_t i = 0; i < n; ++i) {
        const int32_t t = indexes[i];
        if (t < 0 || t >= ntables) return LS_BAD_INDEX;
        const int32_t *cdf = cdfs + (int64_t)t * stride;
        const int32_t size = sizes[t];
        if (size < 2 || size > stride) return LS_BAD_INDEX;
        const int32_t max_value = size - 2;
        const uint32_t cum = (uint32_t)(s.x & mask);

        /* the last k with cdf[k] <= cum (cdf[0] == 0 <= cum < 2^16 == cdf[size - 1]) */
        int32_t a = 0, b = size - 1;
        while (b - a > 1) {
            const int32_t m = (a + b) >> 1;
            if ((uint32_t)cdf[m] <= cum) a = m; else b = m;
        }
        const uint64_t start = (uint64_t)cdf[a], freq = (uint64_t)(cdf[a + 1] - cdf[a]);
        s.x = freq * (s.x >> PRECISION) + (s.x & mask) - start;
        if (renorm(&s)) return LS_SHORT_STREAM;

        int32_t value = a;
        if (value == max_value) {
            int32_t v, count;
            if (get_bits(&s, BYPASS_BITS, &v)) return LS_SHORT_STREAM;
            count = v;
            while (v == BYPASS_MAX) {
                if (get_bits(&s, BYPASS_BITS, &v)) return LS_SHORT_STREAM;
                count += v;
                if (count > 8) return LS_BAD_BYPASS; /* > 32 bits of payload */
            }
            if (count > 8) return LS_BAD_BYPASS;
            uint32_t raw = 0;
            for (int32_t j = 0; j < count; ++j) {
                if (get_bits(&s, BYPASS_BITS, &v)) return LS_SHORT_STREAM;
                raw |= (uint32_t)v << (j * BYPASS_BITS);
            }
            value = (int32_t)(raw >> 1);
            if (raw & 1u) value = -value - 1; else value += max_value;
        }
        out[i] = value + offsets[t];
    }
    return LS_OK;
}
