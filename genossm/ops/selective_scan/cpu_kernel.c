/* The selective-scan recurrence as one fused CPU loop (the "cpu" backend; see cpu.py).

   h_t[n] = exp(dt_t A[n]) h_{t-1}[n] + dt_t u_t B_t[n],   y_t = sum_n C_t[n] h_t[n]

   for every (batch, channel), position-major: dt, u, y, gy, g_dt, g_u are (batch, L, D) with unit stride
   over channels, B, C (batch, L, G, N), A (N, D) (channels innermost), states (batch, N, D). Channels are
   processed in tiles of up to TILE within one B/C group, the tile's state held in a small local array,
   so every step is a handful of TILE-wide vector operations and the state never leaves L1. exp is a
   polynomial (Cephes' expf, under 2 ulp) on arguments clamped to [-87, 88]: a decay below e^-87
   multiplies the state by less than 1e-37 either way (the chunked backend clamps the same way).

   Plain C, no dependency: compiled once per machine by cpu.py and called through ctypes, one call per
   thread on disjoint channel ranges [d_lo, d_hi). */

#include <math.h>
#include <stdint.h>
#include <string.h>

#define TILE 16
#define MAX_STATE 64
#define PREFETCH 8 /* rows ahead */
/* keeps gcc from unrolling a TILE-long lane loop into scalar code before it is vectorised */
#if defined(__GNUC__) && !defined(__clang__)
#define LANES _Pragma("GCC unroll 1")
#else
#define LANES
#endif

typedef int64_t i64;

static inline float fexp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float k = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* log(1 + y) for y in [0, 1]: Cephes' logf polynomial on 1 + y, with Goldberg's correction
   log1p(y) = log(1 + y) * y / ((1 + y) - 1) so that small y keep their precision. */
static inline float flog1p(float y) {
    float v = 1.0f + y;
    float e = v > 1.41421356f ? 1.0f : 0.0f;
    float x = (v > 1.41421356f ? 0.5f * v : v) - 1.0f;
    float z = x * x;
    float q = 7.0376836292e-2f;
    q = q * x - 1.1514610310e-1f;
    q = q * x + 1.1676998740e-1f;
    q = q * x - 1.2420140846e-1f;
    q = q * x + 1.4249322787e-1f;
    q = q * x - 1.6668057665e-1f;
    q = q * x + 2.0000714765e-1f;
    q = q * x - 2.4999993993e-1f;
    q = q * x + 3.3333331174e-1f;
    float r = x + (x * z * q + e * -2.12194440e-4f - 0.5f * z) + e * 0.693359375f;
    float d = v - 1.0f;
    return d == 0.0f ? y : r * (y / d);
}

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)) */
static inline float fsoftplus(float x) {
    float ax = x < 0.0f ? -x : x;
    return (x > 0.0f ? x : 0.0f) + flog1p(fexp(-ax));
}

static inline float fsigmoid(float a) { return 1.0f / (1.0f + fexp(-a)); }

/* position index of step k of a scan over [0, L) */
static inline i64 pos(i64 k, i64 L, int reverse) { return reverse ? L - 1 - k : k; }

/* What the forward does around the recurrence (NULL / 0 for none): Δ = softplus(delta + dbias) read from raw
   delta; with ``finish`` (the last direction of a call), y_t = (Σ_directions Σ_n C h + n_dir D u_t) is kept in
   ysave (for the gate's gradient) and out_t = y_t · silu(z_t) replaces the accumulated y. */
typedef struct {
    const float *dbias, *Dskip, *z;
    float *ysave;
    i64 z_st, ys_st;
    float n_dir;
    int softplus, finish;
} epilogue;

/* One step (position t) of one tile of w channels (w == TILE lets the compiler vectorise the lane loops):
   hs (N, TILE) is the tile's state; row pointers are at the tile's first channel, B/C rows at its group. */
static inline void fwd_step(const int w, i64 N, i64 D, float *restrict hs, const float *restrict dtt,
                            const float *restrict ut, const float *restrict Bt, const float *restrict Ct,
                            const float *restrict A, float *restrict yt, int accumulate, const epilogue ep,
                            const float *restrict dbias, const float *restrict Dskip, const float *restrict zt,
                            float *restrict yst) {
    float dtv[TILE], duv[TILE], yv[TILE];
    if (dbias && ep.softplus)
        LANES for (int l = 0; l < w; l++) dtv[l] = fsoftplus(dtt[l] + dbias[l]);
    else if (dbias)
        LANES for (int l = 0; l < w; l++) dtv[l] = dtt[l] + dbias[l];
    else if (ep.softplus)
        LANES for (int l = 0; l < w; l++) dtv[l] = fsoftplus(dtt[l]);
    else
        LANES for (int l = 0; l < w; l++) dtv[l] = dtt[l];
    LANES for (int l = 0; l < w; l++) {
        duv[l] = dtv[l] * ut[l];
        yv[l] = 0.0f;
    }
    for (i64 n = 0; n < N; n++) {
        const float bn = Bt[n], cn = Ct[n];
        const float *An = A + n * D;
        float *hn = hs + n * TILE;
        LANES for (int l = 0; l < w; l++) {
            float v = fexp(dtv[l] * An[l]) * hn[l] + bn * duv[l];
            hn[l] = v;
            yv[l] += cn * v;
        }
    }
    if (accumulate)
        LANES for (int l = 0; l < w; l++) yv[l] += yt[l];
    if (ep.finish) {
        if (Dskip)
            LANES for (int l = 0; l < w; l++) yv[l] += ep.n_dir * Dskip[l] * ut[l];
        if (yst)
            LANES for (int l = 0; l < w; l++) yst[l] = yv[l];
        if (zt)
            LANES for (int l = 0; l < w; l++) yv[l] *= zt[l] * fsigmoid(zt[l]);
    }
    LANES for (int l = 0; l < w; l++) yt[l] = yv[l];
}

/* Forward over channels [d_lo, d_hi) of every batch row. h (batch, N, D): initial state in, last state out.
   starts, when not NULL, receives the state before each block of block_len steps (in scan order):
   (n_blocks, batch, N, D). dt is the raw delta when dbias or softplus is given (see epilogue); dbias, Dskip
   (D,), z and ysave (batch, L, D) may be NULL. work: (number of tiles) * N * TILE floats, the tiles' states.
   Positions are the outer loop and the range's tiles the inner one, so every array is read row after row
   (long sequences stream from memory; a tile-by-tile walk down the columns would jump a row per step).
   Returns 0, or -1 when the state size exceeds MAX_STATE. */
int ssm_fwd(i64 batch, i64 L, i64 D, i64 N, i64 G,
            const float *dt, i64 dt_sb, i64 dt_st, const float *u, i64 u_sb, i64 u_st,
            const float *Bm, i64 B_sb, i64 B_st, const float *Cm, i64 C_sb, i64 C_st,
            const float *A, float *y, i64 y_sb, i64 y_st, int accumulate,
            float *h, float *starts, i64 block_len, int reverse, i64 d_lo, i64 d_hi,
            const float *dbias, int softplus, const float *Dskip, float n_dir, int finish,
            const float *z, i64 z_sb, i64 z_st, float *ysave, i64 ys_sb, i64 ys_st, float *work) {
    if (N > MAX_STATE) return -1;
    const i64 per_group = D / G;
    const i64 starts_step = batch * N * D;
    const epilogue ep = {dbias, Dskip, z, ysave, z_st, ys_st, n_dir, softplus, finish};
    /* the range's tiles: first channel and width, never across a B/C group */
    i64 n_tiles = 0;
    for (i64 d0 = d_lo; d0 < d_hi; n_tiles++) {
        i64 group_end = (d0 / per_group + 1) * per_group;
        i64 end = d0 + TILE < d_hi ? d0 + TILE : d_hi;
        d0 = end > group_end ? group_end : end;
    }
    for (i64 b = 0; b < batch; b++) {
        float *hb = h + b * N * D;
#define FOR_TILES(body)                                                                   \
    {                                                                                     \
        float *hs = work;                                                                 \
        for (i64 d0 = d_lo, ti = 0; ti < n_tiles; ti++, hs += N * TILE) {                  \
            i64 group_end = (d0 / per_group + 1) * per_group;                             \
            i64 end = d0 + TILE < d_hi ? d0 + TILE : d_hi;                                \
            if (end > group_end) end = group_end;                                         \
            const int w = (int)(end - d0);                                                \
            const i64 gN = (d0 / per_group) * N;                                          \
            (void)gN;                                                                     \
            body;                                                                         \
            d0 = end;                                                                     \
        }                                                                                 \
    }
        FOR_TILES(for (i64 n = 0; n < N; n++) for (int l = 0; l < w; l++) hs[n * TILE + l] = hb[n * D + d0 + l])
        for (i64 k = 0; k < L; k++) {
            const i64 t = pos(k, L, reverse);
            if (starts && k % block_len == 0) {
                float *sb = starts + (k / block_len) * starts_step + b * N * D;
                FOR_TILES(for (i64 n = 0; n < N; n++) for (int l = 0; l < w; l++) sb[n * D + d0 + l] = hs[n * TILE + l])
            }
            const float *dtt = dt + b * dt_sb + t * dt_st, *ut = u + b * u_sb + t * u_st;
            const float *Bt = Bm + b * B_sb + t * B_st, *Ct = Cm + b * C_sb + t * C_st;
            float *yt = y + b * y_sb + t * y_st;
            const float *zt = z ? z + b * z_sb + t * z_st : 0;
            float *yst = ysave ? ysave + b * ys_sb + t * ys_st : 0;
#define STEP(W)                                                                                             \
    fwd_step(W, N, D, hs, dtt + d0, ut + d0, Bt + gN, Ct + gN, A + d0, yt + d0, accumulate, ep,              \
             dbias ? dbias + d0 : 0, Dskip ? Dskip + d0 : 0, zt ? zt + d0 : 0, yst ? yst + d0 : 0)
            FOR_TILES(if (w == TILE) STEP(TILE); else STEP(w))
#undef STEP
        }
        FOR_TILES(for (i64 n = 0; n < N; n++) for (int l = 0; l < w; l++) hb[n * D + d0 + l] = hs[n * TILE + l])
#undef FOR_TILES
    }
    return 0;
}

/* Backward of one block of one tile of w channels. hb, ab: the block's recomputed states and decays
   (block_len, N, TILE); accB, accC: the block's contributions to g_B and g_C, per lane (summed over the lanes
   once per group, not once per tile); lam (N, D-strided): the adjoint carried in from the later steps,
   replaced by the adjoint of the state before the block; g_A accumulates. */
static inline void bwd_block(const int w, i64 k0, i64 k1, i64 L, i64 D, i64 N, i64 gN,
                             const float *restrict dt, i64 dt_st, const float *restrict u, i64 u_st,
                             const float *restrict Bm, i64 B_st, const float *restrict Cm, i64 C_st,
                             const float *restrict A, const float *restrict gy, i64 gy_st,
                             const float *restrict s, float *restrict mu, float *restrict g_dt, i64 gdt_st,
                             float *restrict g_u, i64 gu_st, float *restrict g_A, float *restrict hb,
                             float *restrict ab, float *restrict accB, float *restrict accC, int reverse) {
    float lam[MAX_STATE][TILE], gA[MAX_STATE][TILE];
    float dtv[TILE], duv[TILE], gv[TILE], gdu[TILE], gdtA[TILE];
    for (i64 n = 0; n < N; n++) {
        LANES for (int l = 0; l < w; l++) {
            lam[n][l] = mu[n * D + l];
            gA[n][l] = 0.0f;
        }
    }
    /* recompute the block's states and decays from its start state */
    for (i64 k = k0; k < k1; k++) {
        i64 t = pos(k, L, reverse), kk = k - k0;
        const float *dtt = dt + t * dt_st, *ut = u + t * u_st, *Bt = Bm + t * B_st + gN;
        if (k + PREFETCH < k1) { /* rows are a page or more apart: the hardware prefetcher does not follow */
            i64 tp = pos(k + PREFETCH, L, reverse);
            __builtin_prefetch(dt + tp * dt_st);
            __builtin_prefetch(u + tp * u_st);
            __builtin_prefetch(gy + tp * gy_st);
        }
        LANES for (int l = 0; l < w; l++) {
            dtv[l] = dtt[l];
            duv[l] = dtt[l] * ut[l];
        }
        float *hk = hb + kk * N * TILE, *ak = ab + kk * N * TILE;
        /* the previous state: the last step's row of hb, or the block's start state */
        const float *hp = kk ? hb + (kk - 1) * N * TILE : s;
        const i64 hp_n = kk ? TILE : D;
        for (i64 n = 0; n < N; n++) {
            const float bn = Bt[n];
            const float *An = A + n * D, *hpn = hp + n * hp_n;
            LANES for (int l = 0; l < w; l++) {
                float prev = hpn[l];
                float a = fexp(dtv[l] * An[l]);
                ak[n * TILE + l] = a;
                hk[n * TILE + l] = a * prev + bn * duv[l];
            }
        }
    }
    /* adjoint, backwards through the block */
    for (i64 k = k1 - 1; k >= k0; k--) {
        i64 t = pos(k, L, reverse), kk = k - k0;
        const float *dtt = dt + t * dt_st, *ut = u + t * u_st, *gyt = gy + t * gy_st;
        const float *Bt = Bm + t * B_st + gN, *Ct = Cm + t * C_st + gN;
        LANES for (int l = 0; l < w; l++) {
            dtv[l] = dtt[l];
            duv[l] = dtt[l] * ut[l];
            gv[l] = gyt[l];
            gdu[l] = 0.0f;
            gdtA[l] = 0.0f;
        }
        const float *hk = hb + kk * N * TILE, *ak = ab + kk * N * TILE;
        const float *hp = kk ? hb + (kk - 1) * N * TILE : s;
        const i64 hp_n = kk ? TILE : D;
        float *aB = accB + kk * N * TILE, *aC = accC + kk * N * TILE;
        for (i64 n = 0; n < N; n++) {
            const float bn = Bt[n], cn = Ct[n];
            const float *An = A + n * D, *hpn = hp + n * hp_n;
            LANES for (int l = 0; l < w; l++) {
                float hprev = hpn[l];
                float lm = lam[n][l] + cn * gv[l];
                aC[n * TILE + l] += gv[l] * hk[n * TILE + l];
                aB[n * TILE + l] += lm * duv[l];
                gdu[l] += bn * lm;
                float a = ak[n * TILE + l];
                float K = lm * a * hprev;
                gdtA[l] += K * An[l];
                gA[n][l] += K * dtv[l];
                lam[n][l] = lm * a;
            }
        }
        float *gdtt = g_dt + t * gdt_st, *gut = g_u + t * gu_st;
        LANES for (int l = 0; l < w; l++) {
            gdtt[l] += gdtA[l] + gdu[l] * ut[l];
            gut[l] += gdu[l] * dtv[l];
        }
    }
    for (i64 n = 0; n < N; n++) {
        LANES for (int l = 0; l < w; l++) {
            mu[n * D + l] = lam[n][l];
            g_A[n * D + l] += gA[n][l];
        }
    }
}

/* Backward over channels [d_lo, d_hi): accumulates into g_dt, g_u (batch, L, D), g_A (N, D), and into this
   call's own g_B, g_C (batch, L, G, N) (summed over channels, so each thread gets its own). mu (batch, N, D):
   the gradient of the last state in (zeros for none), the gradient of the initial state out. work:
   4 * block_len * N * TILE floats. Blocks are the outer loop (last in scan order first), the tiles of a B/C
   group inner, so a block's rows are shared by the tiles while they are in cache and the sums over channels
   for g_B and g_C are taken once per group and position. */
int ssm_bwd(i64 batch, i64 L, i64 D, i64 N, i64 G,
            const float *dt, i64 dt_sb, i64 dt_st, const float *u, i64 u_sb, i64 u_st,
            const float *Bm, i64 B_sb, i64 B_st, const float *Cm, i64 C_sb, i64 C_st,
            const float *A, const float *gy, i64 gy_sb, i64 gy_st,
            const float *starts, i64 block_len, float *mu,
            float *g_dt, i64 gdt_sb, i64 gdt_st, float *g_u, i64 gu_sb, i64 gu_st,
            float *g_B, i64 gB_sb, i64 gB_st, float *g_C, i64 gC_sb, i64 gC_st, float *g_A,
            float *work, int reverse, i64 d_lo, i64 d_hi) {
    if (N > MAX_STATE) return -1;
    const i64 per_group = D / G;
    const i64 starts_step = batch * N * D;
    const i64 n_blocks = (L + block_len - 1) / block_len;
    float *hb = work, *ab = work + block_len * N * TILE;
    float *accB = work + 2 * block_len * N * TILE, *accC = work + 3 * block_len * N * TILE;
    for (i64 b = 0; b < batch; b++) {
        for (i64 j = n_blocks - 1; j >= 0; j--) {
            const i64 k0 = j * block_len, k1 = k0 + block_len < L ? k0 + block_len : L;
            const float *sj = starts + j * starts_step + b * N * D;
            for (i64 g0 = d_lo; g0 < d_hi;) { /* the part of one B/C group in [d_lo, d_hi) */
                const i64 g_end0 = (g0 / per_group + 1) * per_group, g_end = g_end0 < d_hi ? g_end0 : d_hi;
                const i64 gN = (g0 / per_group) * N;
                memset(accB, 0, sizeof(float) * 2 * block_len * N * TILE); /* accB and accC */
                for (i64 d0 = g0; d0 < g_end; d0 += TILE) {
                    const int w = g_end - d0 < TILE ? (int)(g_end - d0) : TILE;
#define BLOCK_ARGS                                                                                           \
    k0, k1, L, D, N, gN, dt + b * dt_sb + d0, dt_st, u + b * u_sb + d0, u_st, Bm + b * B_sb, B_st,             \
        Cm + b * C_sb, C_st, A + d0, gy + b * gy_sb + d0, gy_st, sj + d0, mu + b * N * D + d0,                 \
        g_dt + b * gdt_sb + d0, gdt_st, g_u + b * gu_sb + d0, gu_st, g_A + d0, hb, ab, accB, accC, reverse
                    if (w == TILE)
                        bwd_block(TILE, BLOCK_ARGS);
                    else
                        bwd_block(w, BLOCK_ARGS);
#undef BLOCK_ARGS
                }
                for (i64 k = k0; k < k1; k++) { /* lanes summed: channels of this group */
                    i64 t = pos(k, L, reverse), kk = k - k0;
                    float *gBt = g_B + b * gB_sb + t * gB_st + gN, *gCt = g_C + b * gC_sb + t * gC_st + gN;
                    const float *aB = accB + kk * N * TILE, *aC = accC + kk * N * TILE;
                    for (i64 n = 0; n < N; n++) {
                        float sb = 0.0f, sc = 0.0f;
                        for (int l = 0; l < TILE; l++) {
                            sb += aB[n * TILE + l];
                            sc += aC[n * TILE + l];
                        }
                        gBt[n] += sb;
                        gCt[n] += sc;
                    }
                }
                g0 = g_end;
            }
        }
    }
    return 0;
}

/* Depthwise convolution along positions with silu, position-major, for channels [e_lo, e_hi):
   out[b, t, e] = silu(bias[e] + sum_k w[k, e] x[b, t + k - left, e]), x zero outside [0, L).
   The Mamba branch's short conv (cpu.py: conv_silu_pm) in the layout of the scan, without transposes. */

/* The pre-activation of one position t for channels [0, w): bias + the K taps that fall inside [0, L). */
static inline void conv_row_pre(const int w, i64 t, i64 L, i64 E, i64 K, i64 left, const float *restrict x,
                                i64 x_st, const float *restrict wt, const float *restrict bias, float *restrict acc) {
    LANES for (int l = 0; l < w; l++) acc[l] = bias[l];
    for (i64 k = 0; k < K; k++) {
        i64 s = t + k - left;
        if (s < 0 || s >= L) continue;
        const float *restrict xs = x + s * x_st, *restrict wk = wt + k * E;
        LANES for (int l = 0; l < w; l++) acc[l] += wk[l] * xs[l];
    }
}

/* One position t of channels [0, w) (w == TILE: the vectorised case). Pointers do not alias. */
static inline void conv_row_fwd(const int w, i64 t, i64 L, i64 E, i64 K, i64 left,
                                const float *restrict x, i64 x_st, const float *restrict wt,
                                const float *restrict bias, float *restrict out) {
    float acc[TILE];
    conv_row_pre(w, t, L, E, K, left, x, x_st, wt, bias, acc);
    LANES for (int l = 0; l < w; l++) out[l] = acc[l] * fsigmoid(acc[l]);
}

static inline void conv_row_bwd(const int w, i64 t, i64 L, i64 E, i64 K, i64 left,
                                const float *restrict x, i64 x_st, const float *restrict wt,
                                const float *restrict bias, const float *restrict g, float *restrict g_x,
                                i64 gx_st, float *restrict g_w, float *restrict g_b) {
    float acc[TILE];
    conv_row_pre(w, t, L, E, K, left, x, x_st, wt, bias, acc);
    LANES for (int l = 0; l < w; l++) {
        float sg = fsigmoid(acc[l]);
        acc[l] = g[l] * sg * (1.0f + acc[l] * (1.0f - sg)); /* now the gradient of the pre-activation */
        g_b[l] += acc[l];
    }
    for (i64 k = 0; k < K; k++) {
        i64 s = t + k - left;
        if (s < 0 || s >= L) continue;
        const float *restrict xs = x + s * x_st, *restrict wk = wt + k * E;
        float *restrict gxs = g_x + s * gx_st, *restrict gwk = g_w + k * E;
        LANES for (int l = 0; l < w; l++) {
            gxs[l] += wk[l] * acc[l];
            gwk[l] += acc[l] * xs[l];
        }
    }
}

/* g == NULL: forward into out. Otherwise backward: accumulates into g_x (batch, L, E), g_w (K, E), g_b (E). */
int conv_silu(i64 batch, i64 L, i64 E, i64 K, i64 left, const float *x, i64 x_sb, i64 x_st, const float *wt,
              const float *bias, const float *g, i64 g_sb, i64 g_st, float *out, i64 o_sb, i64 o_st,
              float *g_x, i64 gx_sb, i64 gx_st, float *g_w, float *g_b, i64 e_lo, i64 e_hi) {
    /* positions outermost, so rows are read front to back (the tap accumulators are the thread's own) */
    for (i64 b = 0; b < batch; b++)
        for (i64 t = 0; t < L; t++)
            for (i64 e0 = e_lo; e0 < e_hi; e0 += TILE) {
                const int w = e_hi - e0 < TILE ? (int)(e_hi - e0) : TILE;
                const float *xb = x + b * x_sb + e0;
                if (!g) {
                    float *o = out + b * o_sb + t * o_st + e0;
                    if (w == TILE)
                        conv_row_fwd(TILE, t, L, E, K, left, xb, x_st, wt + e0, bias + e0, o);
                    else
                        conv_row_fwd(w, t, L, E, K, left, xb, x_st, wt + e0, bias + e0, o);
                } else {
                    const float *gt = g + b * g_sb + t * g_st + e0;
                    float *gx = g_x + b * gx_sb + e0;
                    if (w == TILE)
                        conv_row_bwd(TILE, t, L, E, K, left, xb, x_st, wt + e0, bias + e0, gt, gx, gx_st,
                                     g_w + e0, g_b + e0);
                    else
                        conv_row_bwd(w, t, L, E, K, left, xb, x_st, wt + e0, bias + e0, gt, gx, gx_st,
                                     g_w + e0, g_b + e0);
                }
            }
    return 0;
}

/* dst (cols, rows) = the transpose of src (rows, cols), for the source rows [r_lo, r_hi): blocks of
   TILE x TILE go through L1, so both sides are read and written a cache line at a time. src_st, dst_st:
   the row strides. The layout change of the public (batch, channels, L) entry (cpu.py: _swap_last). */
int transpose_2d(i64 rows, i64 cols, const float *src, i64 src_st, float *dst, i64 dst_st, i64 r_lo, i64 r_hi) {
    (void)rows;
    float blk[TILE][TILE];
    for (i64 c0 = 0; c0 < cols; c0 += TILE) {
        const int wc = cols - c0 < TILE ? (int)(cols - c0) : TILE;
        for (i64 r0 = r_lo; r0 < r_hi; r0 += TILE) {
            const int wr = r_hi - r0 < TILE ? (int)(r_hi - r0) : TILE;
            if (wr == TILE && wc == TILE) {
                for (int i = 0; i < TILE; i++) {
                    const float *s = src + (r0 + i) * src_st + c0;
                    for (int j = 0; j < TILE; j++) blk[j][i] = s[j];
                }
                for (int j = 0; j < TILE; j++) {
                    float *d = dst + (c0 + j) * dst_st + r0;
                    for (int i = 0; i < TILE; i++) d[i] = blk[j][i];
                }
            } else {
                for (int i = 0; i < wr; i++)
                    for (int j = 0; j < wc; j++) dst[(c0 + j) * dst_st + r0 + i] = src[(r0 + i) * src_st + c0 + j];
            }
        }
    }
    return 0;
}
