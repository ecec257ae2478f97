// Selective scan (Mamba's S6 recurrence) on the CPU: the "cpp" backend of models/scan.py.
//
// For every batch item b and channel d, with the N-dimensional state kept in a small local array:
//
//     Δ_t = softplus(delta_t + bias_d)   (or without softplus)
//     h_t = exp(Δ_t A_d) ⊙ h_{t-1} + Δ_t u_t B_t          y_t = Σ_n C_t,n h_t,n + D_d u_t
//
// One pass over time per channel; nothing of size (batch, D, L, N) is ever in memory. The backward
// recomputes the states of one channel into a per-thread workspace and runs the adjoint recurrence
// backwards in time, like mamba-ssm's CUDA kernel. The optional z gate is left to the caller (autograd).
//
// Plain C ABI (called through ctypes, no torch or Python headers), so it builds in about a second with
// any C++17 compiler. Layouts, all float32 and contiguous:
//   u, delta, y, grad_y, du, ddelta : (batch, dim, L)       A : (dim, N)       D, delta_bias : (dim) or null
//   B, C : (batch, groups, L, N)   (time-major: one step's N values are adjacent; channel d uses group
//          d / (dim / groups))
// Work is split over batch × channel (forward) or batch × group × part of a group (backward) with
// OpenMP; the caller passes torch's intra-op thread count so a process that pins torch to k threads
// gets k here too.

#include <cstdint>
#include <cstring>
#include <type_traits>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

inline float bits_to_float(int32_t i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}

inline int32_t float_to_bits(float f) {
    int32_t i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}

// exp(x) to about one ulp for x in [-87, 88], and 0 below -87.7 (between, the float result is denormal or
// zero anyway, and the contribution of such a decay to the state is below 1e-37). Call-free, with no
// branches beyond two clamps, so the compiler vectorises the loops over the state index that use it:
// libm's expf is a call the vectoriser cannot see into (its SIMD variants need -ffast-math, which would
// also break the rounding trick below). NaN stays NaN.
inline float exp_f32(float x) {
    const float log2e = 1.44269504088896341f;
    const float round_magic = 12582912.0f;  // 1.5 · 2^23: adding it rounds to an integer kept in the low mantissa bits
    const float ln2_hi = 0.693359375f;      // ln 2 split in two: ln2_hi has 9 significant bits, so n · ln2_hi is exact
    const float ln2_lo = -2.12194440e-4f;   // ln 2 - ln2_hi
    // clamps written as a < b ? a : b, the exact semantics of the min / max instructions (NaN → the bound;
    // the NaN is put back at the end)
    float xc = x < 88.0f ? x : 88.0f;       // n <= 127
    xc = xc > -88.0f ? xc : -88.0f;         // n >= -127, and n = -127 makes the scale below exactly 0
    const float k = xc * log2e + round_magic;
    const int32_t ki = float_to_bits(k) - float_to_bits(round_magic);  // n = round(x / ln 2) as an integer
    const float n = k - round_magic;
    float r = xc - n * ln2_hi;  // |r| <= ln(2) / 2
    r = r - n * ln2_lo;
    // Taylor series of e^r to degree 7: the truncation error r^8 / 8! is below 6e-9 for |r| <= ln(2) / 2
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * bits_to_float((ki + 127) << 23) + (x - x);  // · 2^n (2^-127 is encoded as 0); x - x: NaN stays NaN
}

// Σ v[0..W) for W = 8, 16 or 32, by halving in vector registers: log2(W) dependent additions. Without
// -ffast-math the compiler sums a plain loop strictly in order, a chain of W scalar additions per time step
// that made the forward twice as slow; the vector types are a GCC / Clang extension (no intrinsics, so any
// target architecture compiles it).
typedef float vec8 __attribute__((vector_size(32)));
typedef float vec4 __attribute__((vector_size(16)));

template <int W>
inline float tree_sum(const float* v) {
    static_assert(W % 8 == 0, "tree_sum needs a multiple of 8");
    vec8 a;
    std::memcpy(&a, v, sizeof a);
    for (int i = 8; i < W; i += 8) {
        vec8 b;
        std::memcpy(&b, v + i, sizeof b);
        a += b;
    }
    vec4 lo, hi;
    std::memcpy(&lo, &a, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&a) + sizeof lo, sizeof hi);
    lo += hi;
    return (lo[0] + lo[2]) + (lo[1] + lo[3]);
}

// Σ prod[0..N): by halving for the specialised state sizes, else in order.
template <int NS>
inline float state_sum(const float* prod, int64_t N) {
    if constexpr (NS > 0 && NS % 8 == 0) {
        return tree_sum<NS>(prod);
    } else {
        float acc = 0.0f;
        for (int64_t n = 0; n < N; ++n) acc += prod[n];
        return acc;
    }
}

// log(1 + e) for e in [0, 1], as 2·atanh(s) with s = e / (2 + e) <= 1/3: the odd series in s converges fast
// (the first term left out, s^19 / 19, is below 2e-10 relative) and, unlike log(1 + e), loses nothing for
// small e. Call-free, so loops over time that use it vectorise.
inline float log1p_unit(float e) {
    const float s = e / (2.0f + e);
    const float w = s * s;
    float p = 1.0f / 17.0f;
    p = p * w + 1.0f / 15.0f;
    p = p * w + 1.0f / 13.0f;
    p = p * w + 1.0f / 11.0f;
    p = p * w + 1.0f / 9.0f;
    p = p * w + 1.0f / 7.0f;
    p = p * w + 1.0f / 5.0f;
    p = p * w + 1.0f / 3.0f;
    p = p * w + 1.0f;
    return 2.0f * s * p;
}

// What the kernels need to know about one call.
struct Problem {
    const float *u, *delta, *delta_bias, *A, *B, *C, *D;  // delta_bias and D may be null
    int softplus;
    int64_t batch, dim, L, N, groups;
};

// Δ_t = softplus(delta_t + bias) for one channel (torch's softplus: the identity above 20), and, when
// ``slope`` is not null, dΔ/d(delta) = sigmoid(delta_t + bias) (1 above 20). With e = exp(-|x|) both are
// exact to rounding for any x: softplus(x) = max(x, 0) + log(1 + e), sigmoid(x) = 1/(1 + e) or e/(1 + e).
inline void effective_delta(const Problem& P, const float* delta, int64_t d, float* dt, float* slope) {
    const float bias = P.delta_bias ? P.delta_bias[d] : 0.0f;
#pragma omp simd
    for (int64_t t = 0; t < P.L; ++t) {
        const float x = delta[t] + bias;
        if (P.softplus) {
            const float e = exp_f32(x < 0.0f ? x : -x);
            dt[t] = x > 20.0f ? x : (x > 0.0f ? x : 0.0f) + log1p_unit(e);
            if (slope) slope[t] = x > 20.0f ? 1.0f : (x >= 0.0f ? 1.0f : e) / (1.0f + e);
        } else {
            dt[t] = x;
            if (slope) slope[t] = 1.0f;
        }
    }
}

// NS > 0: the state size is the compile-time constant NS (the common d_state values), so the state loops
// are fully unrolled and vectorised and the state stays in registers; NS == 0: any size, given at run time,
// with the per-channel arrays in ``scratch``. Workspace ``ws``: L + 4N floats.
template <int NS>
void forward_channel(const Problem& P, int64_t b, int64_t d, float* y, float* ws) {
    constexpr int S = NS > 0 ? NS : 1;
    const int64_t N = NS > 0 ? NS : P.N, L = P.L;
    const int64_t row = (b * P.dim + d) * L, bc = (b * P.groups + d / (P.dim / P.groups)) * L * N;
    const float *u = P.u + row, *A = P.A + d * N, *B = P.B + bc, *C = P.C + bc;
    const float skip = P.D ? P.D[d] : 0.0f;
    float* dt = ws;
    float h_local[S], prod_local[S];
    float* h = NS > 0 ? h_local : ws + L;
    float* prod = NS > 0 ? prod_local : ws + L + N;
    effective_delta(P, P.delta + row, d, dt, nullptr);
    for (int64_t n = 0; n < N; ++n) h[n] = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
        const float step = dt[t];
        const float x = step * u[t];
        const float* Bt = B + t * N;
        const float* Ct = C + t * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
            h[n] = exp_f32(step * A[n]) * h[n] + x * Bt[n];
            prod[n] = Ct[n] * h[n];
        }
        y[row + t] = state_sum<NS>(prod, N) + skip * u[t];
    }
}

// One channel's gradients. Workspace ``ws``: (2L + 5) N + 2L floats. H holds (L + 1) × N floats: a zero row,
// then the state after every step, so H + t·N is h_{t-1}; E holds L × N floats, the decays exp(Δ_t A).
// dB and dC (L × N) are accumulated into (+=): the caller gives every group part its own buffers. The
// per-channel sums (∂A, ∂D, ∂delta_bias) are written to this (b, d)'s slots; the caller sums over b.
//
// Adjoint: λ_t = ∂loss/∂h_t = gy_t C_t + exp(Δ_{t+1} A) ⊙ λ_{t+1}; then with x_t = Δ_t u_t
//   ∂/∂C_t = gy_t h_t      ∂/∂B_t = λ_t x_t      ∂/∂x_t = Σ_n λ_t B_t      ∂/∂(Δ_t A) = λ_t ⊙ h_{t-1} ⊙ exp(Δ_t A)
template <int NS>
void backward_channel(const Problem& P, int64_t b, int64_t d, const float* grad_y, float* du, float* ddelta,
                      float* dA, float* dD, float* dbias, float* dB, float* dC, float* ws) {
    constexpr int S = NS > 0 ? NS : 1;
    const int64_t N = NS > 0 ? NS : P.N, L = P.L;
    const int64_t row = (b * P.dim + d) * L, bc = (b * P.groups + d / (P.dim / P.groups)) * L * N;
    const float *u = P.u + row, *A = P.A + d * N, *B = P.B + bc, *C = P.C + bc, *gy = grad_y + row;
    const float skip = P.D ? P.D[d] : 0.0f;
    float *H = ws, *E = ws + (L + 1) * N, *scratch = ws + (2 * L + 1) * N;
    float *dt = ws + (2 * L + 5) * N, *slope = dt + L;
    float carry_local[S], dA_local[S], pb_local[S], pa_local[S];
    float* carry = NS > 0 ? carry_local : scratch;  // exp(Δ_{t+1} A) ⊙ λ_{t+1}
    float* dA_acc = NS > 0 ? dA_local : scratch + N;
    float* prod_b = NS > 0 ? pb_local : scratch + 2 * N;  // λ_t ⊙ B_t
    float* prod_a = NS > 0 ? pa_local : scratch + 3 * N;  // ∂/∂(Δ_t A) ⊙ A
    effective_delta(P, P.delta + row, d, dt, slope);
    // recompute the states and decays (forward in time)
    for (int64_t n = 0; n < N; ++n) H[n] = 0.0f;
    for (int64_t t = 0; t < L; ++t) {
        const float step = dt[t];  // a local: the stores below could alias dt[t] as far as the compiler knows
        const float x = step * u[t];
        const float* Bt = B + t * N;
        const float* h_prev = H + t * N;
        float* h = H + (t + 1) * N;
        float* e = E + t * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
            e[n] = exp_f32(step * A[n]);
            h[n] = e[n] * h_prev[n] + x * Bt[n];
        }
    }
    // the adjoint recurrence (backward in time)
    for (int64_t n = 0; n < N; ++n) carry[n] = dA_acc[n] = 0.0f;
    float dD_acc = 0.0f, dbias_acc = 0.0f;
    for (int64_t t = L - 1; t >= 0; --t) {
        const float g = gy[t], step = dt[t], ut = u[t];
        const float x = step * ut;
        const float* Bt = B + t * N;
        const float* Ct = C + t * N;
        const float* h_prev = H + t * N;
        const float* h = H + (t + 1) * N;
        const float* e = E + t * N;
        float* dBt = dB + t * N;
        float* dCt = dC + t * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
            const float lam = g * Ct[n] + carry[n];
            dCt[n] += g * h[n];
            dBt[n] += lam * x;
            prod_b[n] = lam * Bt[n];
            const float g_exponent = lam * h_prev[n] * e[n];  // ∂/∂(Δ_t A_n)
            dA_acc[n] += g_exponent * step;
            prod_a[n] = g_exponent * A[n];
            carry[n] = e[n] * lam;
        }
        const float sum_b = state_sum<NS>(prod_b, N);
        du[row + t] = sum_b * step + g * skip;
        const float g_delta = (sum_b * ut + state_sum<NS>(prod_a, N)) * slope[t];  // through Δ = softplus(·)
        ddelta[row + t] = g_delta;
        dD_acc += g * ut;
        dbias_acc += g_delta;
    }
    for (int64_t n = 0; n < N; ++n) dA[n] = dA_acc[n];
    *dD = dD_acc;
    *dbias = dbias_acc;
}

template <typename Fn>
void dispatch_state_size(int64_t N, Fn&& fn) {
    switch (N) {
        case 16: fn(std::integral_constant<int, 16>{}); break;  // Mamba's default d_state
        case 8: fn(std::integral_constant<int, 8>{}); break;
        case 32: fn(std::integral_constant<int, 32>{}); break;
        default: fn(std::integral_constant<int, 0>{}); break;
    }
}

inline int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

}  // namespace

extern "C" {

// Bumped whenever the signatures below change; the loader refuses a library with another version.
int asd_scan_abi_version() { return 2; }

// y = the scan plus D·u. workspace: threads × (L + 4N) floats.
void asd_scan_forward(const float* u, const float* delta, const float* delta_bias, int softplus, const float* A,
                      const float* B, const float* C, const float* D, float* y, int64_t batch, int64_t dim, int64_t L,
                      int64_t N, int64_t groups, int threads, float* workspace) {
    const Problem P{u, delta, delta_bias, A, B, C, D, softplus, batch, dim, L, N, groups};
    dispatch_state_size(N, [&](auto ns) {
        constexpr int NS = decltype(ns)::value;
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t item = 0; item < batch * dim; ++item) {
            forward_channel<NS>(P, item / dim, item % dim, y, workspace + thread_index() * (L + 4 * N));
        }
    });
}

// du, ddelta: (batch, dim, L). dA_part: (batch, dim, N), dD_part, dbias_part: (batch, dim), summed over batch by
// the caller. dB_part, dC_part: (batch, groups, parts, L, N), zero on entry, summed over parts by the caller:
// part p of a group owns its own buffers, so no two threads ever add into the same memory.
// workspace: threads × ((2L + 5) N + 2L) floats.
void asd_scan_backward(const float* u, const float* delta, const float* delta_bias, int softplus, const float* A,
                       const float* B, const float* C, const float* D, const float* grad_y, float* du, float* ddelta,
                       float* dA_part, float* dD_part, float* dbias_part, float* dB_part, float* dC_part,
                       int64_t batch, int64_t dim, int64_t L, int64_t N, int64_t groups, int64_t parts, int threads,
                       float* workspace) {
    const Problem P{u, delta, delta_bias, A, B, C, D, softplus, batch, dim, L, N, groups};
    const int64_t per_group = dim / groups;
    const int64_t ws_size = (2 * L + 5) * N + 2 * L;
    dispatch_state_size(N, [&](auto ns) {
        constexpr int NS = decltype(ns)::value;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
        for (int64_t item = 0; item < batch * groups * parts; ++item) {
            const int64_t p = item % parts, bg = item / parts, b = bg / groups, g = bg % groups;
            const int64_t first = g * per_group + p * per_group / parts;
            const int64_t last = g * per_group + (p + 1) * per_group / parts;
            float* ws = workspace + thread_index() * ws_size;
            for (int64_t d = first; d < last; ++d) {
                const int64_t bd = b * dim + d;
                backward_channel<NS>(P, b, d, grad_y, du, ddelta, dA_part + bd * N, dD_part + bd, dbias_part + bd,
                                     dB_part + item * L * N, dC_part + item * L * N, ws);
            }
        }
    });
}

}  // extern "C"
