// C shim over oneDNN 2.6 fp32 convolutions (see shim.h for the interface).
//
// Design notes (the why):
// - Primitive creation costs far more than a small convolution, so every
//   (pass, geometry) gets one cache entry holding its primitive, the reorders
//   between the caller's plain layout and the primitive's blocked one, and the
//   blocked intermediate buffers. Entries are never evicted: a network has a
//   handful of geometries.
// - The primitive's memory descriptors use format_tag::any so oneDNN picks its
//   fast (blocked) layout; a reorder is only created where that layout differs
//   from the plain NCHW/OIHW/x one.
// - Thread safety: the Debian build has DNNL_ENABLE_CONCURRENT_EXEC off, so in
//   the default "library" scratchpad mode a primitive must run on the thread
//   that created it. Rust may call from any thread, so all primitives use
//   scratchpad_mode::user and the scratchpad lives in the entry. The entry's
//   cached buffers make an entry single-user, hence one mutex per entry held
//   for the whole execution; the map mutex is held only for lookup and
//   creation (a few ms of JIT, once per geometry), so different geometries
//   can run concurrently. The CPU stream of an
//   OpenMP build is stateless (execution is synchronous), so one global
//   stream is safe to share.
// - Cached intermediate buffers beat per-call allocation (measured: per-call
//   adds up to ~0.5 ms on a 0.7 ms convolution, from page faults on fresh
//   pages), hence the cache.
// - No exception may cross the C boundary: every entry point catches all.

#include "shim.h"

#include <dnnl.hpp>

#include <array>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

thread_local std::string t_last_error;

// Function-local statics: initialised on first use (thread-safe in C++11),
// inside the callers' try blocks, so a failure to create them is reported.
engine &eng() {
    static engine e(engine::kind::cpu, 0);
    return e;
}
stream &strm() {
    static stream s(eng());
    return s;
}

struct Geom {
    int n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw;
    // 1: inputs (x, w, dy) rounded to bf16 inside the call, outputs and accumulation f32.
    int bf16;
    // 1: the activations (x, y and their gradients) are channels-last (NHWC) instead of NCHW.
    int nhwc;
    int ho() const { return (h + 2 * ph - kh) / sh + 1; }
    int wo() const { return (w + 2 * pw - kw) / sw + 1; }
    // 64-bit so that huge paddings cannot overflow ho()/wo() below. The size
    // cap is ours: oneDNN 2.6 dies with SIGFPE (not an error) while creating
    // descriptors for absurd sizes (~1e15 elements); 2^31 is far from that.
    bool valid() const {
        const long long hp = h + 2LL * ph, wp = w + 2LL * pw;
        if (!(n > 0 && c_in > 0 && h > 0 && w > 0 && c_out > 0 && kh > 0
                    && (bf16 == 0 || bf16 == 1) && (nhwc == 0 || nhwc == 1)
                    && kw > 0 && sh > 0 && sw > 0 && ph >= 0 && pw >= 0
                    && hp >= kh && wp >= kw && hp <= INT_MAX && wp <= INT_MAX))
            return false;
        const double lim = INT_MAX; // elements per tensor, in double: no overflow
        return (double)n * c_in * h * w <= lim
                && (double)c_out * c_in * kh * kw <= lim
                && (double)n * c_out * ho() * wo() <= lim;
    }
    memory::dims src() const { return {n, c_in, h, w}; }
    memory::dims wei() const { return {c_out, c_in, kh, kw}; }
    memory::dims bia() const { return {c_out}; }
    memory::dims dst() const { return {n, c_out, ho(), wo()}; }
};

// A primitive plus its user-managed scratchpad (see the thread-safety note).
struct Prim {
    primitive p;
    memory::desc scratch_md;
    memory scratch; // cached; empty when the primitive needs none

    template <typename PD>
    explicit Prim(const PD &pd) : p(pd.get()), scratch_md(pd.scratchpad_desc()) {
        // Zeroed once: oneDNN's bf16 AMX weight-gradient kernel sums parts from here that it
        // never writes for taps which never meet the image (3×3 with stride 2 on a 1×1 image),
        // so what the memory held came out as their gradient (up to 1e31, tested).
        if (scratch_md.get_size()) {
            scratch = memory(scratch_md, eng());
            std::memset(scratch.get_data_handle(), 0, scratch_md.get_size());
        }
    }
    Prim() = default;
    void run(std::unordered_map<int, memory> args) {
        if (scratch_md.get_size()) args[DNNL_ARG_SCRATCHPAD] = scratch;
        p.execute(strm(), args);
    }
};

// One argument of the convolution: the caller's plain layout, the layout the
// primitive chose and, only when they differ, a reorder and a buffer.
struct Arg {
    int id; // DNNL_ARG_*
    bool is_output;
    memory::desc user_md, prim_md;
    bool needs_reorder = false;
    Prim reo;   // user->prim for inputs, prim->user for outputs
    memory buf; // cached blocked buffer
};

struct Entry {
    std::mutex mu; // one execution at a time: buffers and scratchpads are shared
    Prim conv;
    std::string impl;
    std::vector<Arg> args; // in the order the C functions pass pointers
};

primitive_attr user_scratchpad() {
    primitive_attr a;
    a.set_scratchpad_mode(scratchpad_mode::user);
    return a;
}

memory::desc plain(const memory::dims &d, tag t) {
    return memory::desc(d, dt::f32, t);
}
memory::desc any(const memory::dims &d, dt type = dt::f32) {
    return memory::desc(d, type, tag::any);
}
// The primitive's layout for an activation (x, y and their gradients): oneDNN's choice (its
// blocked layout), or NHWC where the caller's are NHWC. Then none needs a reorder in fp32 (in
// bf16 only the conversion of the inputs): a network that keeps its activations channels-last
// from layer to layer (DenseNet) pays no reorder at all. Measured on the Xeon (three passes,
// DenseNet's 3×3 192 → 32 at 24×24, batch 32): 24.7 ms with NCHW x, 21.1 with NHWC x.
memory::desc activation(const Geom &g, const memory::dims &d, dt type = dt::f32) {
    return memory::desc(d, type, g.nhwc ? tag::nhwc : tag::any);
}
// The type the convolution reads its inputs in: the caller's f32 buffers are converted by the
// reorder that brings them into the primitive's layout anyway.
dt input_type(const Geom &g) { return g.bf16 ? dt::bf16 : dt::f32; }

void add_arg(Entry &e, int id, bool is_output, const memory::desc &user_md,
        const memory::desc &prim_md) {
    Arg a;
    a.id = id;
    a.is_output = is_output;
    a.user_md = user_md;
    a.prim_md = prim_md;
    if (user_md != prim_md) {
        a.needs_reorder = true;
        const auto attr = user_scratchpad();
        a.reo = Prim(is_output
                        ? reorder::primitive_desc(
                                eng(), prim_md, eng(), user_md, attr)
                        : reorder::primitive_desc(
                                eng(), user_md, eng(), prim_md, attr));
        a.buf = memory(prim_md, eng());
    }
    e.args.push_back(std::move(a));
}

convolution_forward::primitive_desc fwd_pd(
        const Geom &g, const primitive_attr &attr) {
    convolution_forward::desc d(prop_kind::forward_training,
            algorithm::convolution_direct, activation(g, g.src(), input_type(g)),
            any(g.wei(), input_type(g)), plain(g.bia(), tag::x), activation(g, g.dst()),
            {g.sh, g.sw}, {g.ph, g.pw},
            {g.ph, g.pw});
    return convolution_forward::primitive_desc(d, attr, eng());
}

std::unique_ptr<Entry> make_entry(int pass, const Geom &g) {
    auto e = std::make_unique<Entry>();
    const auto attr = user_scratchpad();
    const auto src = plain(g.src(), g.nhwc ? tag::nhwc : tag::nchw), wei = plain(g.wei(), tag::oihw),
               bia = plain(g.bia(), tag::x), dst = plain(g.dst(), g.nhwc ? tag::nhwc : tag::nchw);
    // Backward passes need the forward descriptor as a hint; its own
    // scratchpad mode is irrelevant since it is never executed.
    auto fpd = fwd_pd(g, pass == DCNN_PASS_FORWARD ? attr : primitive_attr());
    switch (pass) {
        case DCNN_PASS_FORWARD: {
            e->conv = Prim(fpd);
            e->impl = fpd.impl_info_str();
            add_arg(*e, DNNL_ARG_SRC, false, src, fpd.src_desc());
            add_arg(*e, DNNL_ARG_WEIGHTS, false, wei, fpd.weights_desc());
            add_arg(*e, DNNL_ARG_BIAS, false, bia, fpd.bias_desc());
            add_arg(*e, DNNL_ARG_DST, true, dst, fpd.dst_desc());
            break;
        }
        case DCNN_PASS_BACKWARD_DATA: {
            convolution_backward_data::desc d(algorithm::convolution_direct,
                    activation(g, g.src()), any(g.wei(), input_type(g)),
                    activation(g, g.dst(), input_type(g)), {g.sh, g.sw},
                    {g.ph, g.pw}, {g.ph, g.pw});
            convolution_backward_data::primitive_desc pd(d, attr, eng(), fpd);
            e->conv = Prim(pd);
            e->impl = pd.impl_info_str();
            add_arg(*e, DNNL_ARG_WEIGHTS, false, wei, pd.weights_desc());
            add_arg(*e, DNNL_ARG_DIFF_DST, false, dst, pd.diff_dst_desc());
            add_arg(*e, DNNL_ARG_DIFF_SRC, true, src, pd.diff_src_desc());
            break;
        }
        case DCNN_PASS_BACKWARD_WEIGHTS: {
            convolution_backward_weights::desc d(algorithm::convolution_direct,
                    activation(g, g.src(), input_type(g)), any(g.wei()),
                    plain(g.bia(), tag::x), activation(g, g.dst(), input_type(g)),
                    {g.sh, g.sw}, {g.ph, g.pw}, {g.ph, g.pw});
            convolution_backward_weights::primitive_desc pd(
                    d, attr, eng(), fpd);
            e->conv = Prim(pd);
            e->impl = pd.impl_info_str();
            add_arg(*e, DNNL_ARG_SRC, false, src, pd.src_desc());
            add_arg(*e, DNNL_ARG_DIFF_DST, false, dst, pd.diff_dst_desc());
            add_arg(*e, DNNL_ARG_DIFF_WEIGHTS, true, wei,
                    pd.diff_weights_desc());
            add_arg(*e, DNNL_ARG_DIFF_BIAS, true, bia, pd.diff_bias_desc());
            break;
        }
    }
    return e;
}

std::mutex g_cache_mu;
std::map<std::array<int, 14>, std::unique_ptr<Entry>> g_cache;

Entry &lookup(int pass, const Geom &g) {
    const std::array<int, 14> key = {pass, g.n, g.c_in, g.h, g.w, g.c_out,
            g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.bf16, g.nhwc};
    if (pass < DCNN_PASS_FORWARD || pass > DCNN_PASS_BACKWARD_WEIGHTS)
        throw std::invalid_argument("unknown pass " + std::to_string(pass));
    std::lock_guard<std::mutex> lk(g_cache_mu);
    auto it = g_cache.find(key);
    if (it == g_cache.end()) // a failed creation inserts nothing
        it = g_cache.emplace(key, make_entry(pass, g)).first;
    return *it->second; // stable: entries are heap-allocated, never erased
}

// Runs e on the caller's pointers (e.mu held by the caller). An input whose copy
// in the primitive's layout is already in `ready` (by DNNL_ARG_* id) is not
// reordered again.
void execute_locked(Entry &e, const std::vector<void *> &ptrs,
        const std::unordered_map<int, memory> &ready = {},
        const std::unordered_map<int, void *> &reorder_into = {}) {
    std::unordered_map<int, memory> conv_args;
    std::vector<std::pair<Arg *, std::pair<memory, memory>>> outputs;
    for (size_t i = 0; i < e.args.size(); ++i) {
        Arg &a = e.args[i];
        const auto given = ready.find(a.id);
        if (!a.is_output && given != ready.end()) {
            conv_args[a.id] = given->second;
            continue;
        }
        // Wrapping a caller pointer is a small allocation, not a copy.
        memory user(a.user_md, eng(), ptrs[i]);
        if (!a.needs_reorder) {
            conv_args[a.id] = user;
            continue;
        }
        if (a.is_output) {
            outputs.push_back({&a, {a.buf, user}});
            conv_args[a.id] = a.buf;
            continue;
        }
        // An input's copy goes where the caller keeps it (the bf16 x for the backward), if
        // asked, else into the entry's buffer.
        const auto into = reorder_into.find(a.id);
        memory copy = into == reorder_into.end() ? a.buf : memory(a.prim_md, eng(), into->second);
        a.reo.run({{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, copy}});
        conv_args[a.id] = copy;
    }
    e.conv.run(conv_args);
    for (auto &o : outputs)
        o.first->reo.run({{DNNL_ARG_FROM, o.second.first},
                {DNNL_ARG_TO, o.second.second}});
    strm().wait();
}

void execute(Entry &e, const std::vector<void *> &ptrs) {
    std::lock_guard<std::mutex> lk(e.mu);
    execute_locked(e, ptrs);
}

const Arg &arg(const Entry &e, int id) {
    for (const Arg &a : e.args)
        if (a.id == id) return a;
    throw std::logic_error("no argument " + std::to_string(id));
}

// Building the message allocates, and that must not throw out of a handler.
int fail(int code, const char *what, const char *detail,
        const dnnl::error *de = nullptr) noexcept {
    try {
        t_last_error = std::string(what) + ": ";
        if (de) t_last_error += "oneDNN status " + std::to_string((int)de->status) + ": ";
        t_last_error += detail;
    } catch (...) {
        t_last_error.clear(); // cannot throw
    }
    return code;
}

// Runs f, converting every exception into an error code and message.
template <typename F>
int guarded(const char *what, F &&f) noexcept {
    try {
        f();
        return DCNN_OK;
    } catch (const dnnl::error &e) {
        return fail(DCNN_EDNNL, what, e.what(), &e);
    } catch (const std::invalid_argument &e) {
        return fail(DCNN_EINVAL, what, e.what());
    } catch (const std::exception &e) {
        return fail(DCNN_EOTHER, what, e.what());
    } catch (...) { return fail(DCNN_EOTHER, what, "unknown exception"); }
}

void check(const Geom &g, std::initializer_list<const void *> ptrs) {
    if (!g.valid()) {
        char buf[200];
        snprintf(buf, sizeof buf,
                "invalid geometry n=%d c_in=%d h=%d w=%d c_out=%d k=%dx%d "
                "stride=%dx%d pad=%dx%d bf16=%d nhwc=%d",
                g.n, g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.sh, g.sw, g.ph,
                g.pw, g.bf16, g.nhwc);
        throw std::invalid_argument(buf);
    }
    for (const void *p : ptrs)
        if (!p) throw std::invalid_argument("NULL tensor pointer");
}

// A kept bf16 copy of x is N×H×W×C_in bf16, the layout the bf16 channels-last primitives
// read x in: nothing else can stand in for the reorder.
void check_kept_input(const Geom &g, const Arg &src) {
    if (!g.bf16 || !g.nhwc || src.prim_md != memory::desc(g.src(), dt::bf16, tag::nhwc))
        throw std::invalid_argument("a bf16 copy of x is kept for bf16 channels-last convolutions only");
}

// The geometry travels as DCNN_GEOMETRY_LEN ints (see shim.h), read once here.
Geom geometry(const int *d) {
    if (!d) throw std::invalid_argument("NULL geometry");
    return Geom{d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], d[12]};
}

// The weight gradient of a 1×1, stride-1, unpadded convolution in bf16 with channels-last
// activations is a matrix product: dW (C_out × C_in) = dyᵀ (C_out × P) · x (P × C_in) and
// db = 1ᵀ·dy, P = N·H·W. oneDNN 2.6's AMX weight-gradient kernel is 4–9× slower for these
// than its matmul (measured on the Xeon with AMX, batch 32: DenseNet's transition 192 → 96 at
// 24×24, 2.56 ms against 0.40; 224 → 112 at 12×12, 1.26 against 0.14).
bool weights_by_matmul(const Geom &g) {
    return g.bf16 && g.nhwc && g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0
            && g.pw == 0;
}

struct MatmulEntry {
    std::mutex mu; // one execution at a time: the buffers are shared
    Prim dw_mm, db_mm;
    std::string impl; // "matmul:" and oneDNN's name for the dW product
    memory::desc dy_rows, dy_cols, x_rows, ones_md, dw_md, db_md; // bf16 operands, f32 results
    Prim dy_reo, x_reo; // f32 → bf16, for a dy (and an x) given in f32
    memory dy16, x16, ones;
};

std::unique_ptr<MatmulEntry> make_matmul_entry(const Geom &g) {
    auto e = std::make_unique<MatmulEntry>();
    const memory::dim p = (memory::dim)g.n * g.h * g.w;
    const auto attr = user_scratchpad();
    e->dy_rows = memory::desc({p, g.c_out}, dt::bf16, tag::ab);
    e->dy_cols = memory::desc({g.c_out, p}, dt::bf16, tag::ba); // the same bytes, transposed
    e->x_rows = memory::desc({p, g.c_in}, dt::bf16, tag::ab);
    e->ones_md = memory::desc({1, p}, dt::bf16, tag::ab);
    e->dw_md = memory::desc({g.c_out, g.c_in}, dt::f32, tag::ab); // OIHW of a 1×1 kernel
    e->db_md = memory::desc({1, g.c_out}, dt::f32, tag::ab);
    const matmul::primitive_desc dw_pd(matmul::desc(e->dy_cols, e->x_rows, e->dw_md), attr, eng());
    e->dw_mm = Prim(dw_pd);
    e->impl = std::string("matmul:") + dw_pd.impl_info_str();
    e->db_mm = Prim(matmul::primitive_desc(matmul::desc(e->ones_md, e->dy_rows, e->db_md), attr, eng()));
    const auto f32_rows = [](memory::dim r, memory::dim c) { return memory::desc({r, c}, dt::f32, tag::ab); };
    e->dy_reo = Prim(reorder::primitive_desc(eng(), f32_rows(p, g.c_out), eng(), e->dy_rows, attr));
    e->x_reo = Prim(reorder::primitive_desc(eng(), f32_rows(p, g.c_in), eng(), e->x_rows, attr));
    e->dy16 = memory(e->dy_rows, eng());
    e->ones = memory(e->ones_md, eng());
    uint16_t *ones = (uint16_t *)e->ones.get_data_handle();
    for (memory::dim i = 0; i < p; ++i) ones[i] = 0x3F80; // 1.0 in bf16
    return e;
}

std::mutex g_matmul_mu;
std::map<std::array<int, 13>, std::unique_ptr<MatmulEntry>> g_matmul_cache;

MatmulEntry &lookup_matmul(const Geom &g) {
    const std::array<int, 13> key = {g.n, g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.sh, g.sw,
            g.ph, g.pw, g.bf16, g.nhwc};
    std::lock_guard<std::mutex> lk(g_matmul_mu);
    auto it = g_matmul_cache.find(key);
    if (it == g_matmul_cache.end())
        it = g_matmul_cache.emplace(key, make_matmul_entry(g)).first;
    return *it->second;
}

// dw and db of a convolution for which weights_by_matmul holds, from x in f32 or bf16 (one of
// them not NULL) and dy in f32, or dy already in bf16 (P × C_out, e.g. the data pass's copy).
void weights_matmul(const Geom &g, const float *x, const uint16_t *x_bf16, const float *dy,
        const void *dy_bf16, float *dw, float *db) {
    MatmulEntry &e = lookup_matmul(g);
    std::lock_guard<std::mutex> lk(e.mu);
    const memory::dim p = (memory::dim)g.n * g.h * g.w;
    const auto f32_rows = [](memory::dim r, memory::dim c) { return memory::desc({r, c}, dt::f32, tag::ab); };
    memory dy16 = e.dy16;
    if (dy_bf16) {
        dy16 = memory(e.dy_rows, eng(), (void *)dy_bf16);
    } else {
        memory user(f32_rows(p, g.c_out), eng(), (void *)dy);
        e.dy_reo.run({{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, dy16}});
    }
    memory x16;
    if (x_bf16) {
        x16 = memory(e.x_rows, eng(), (void *)x_bf16);
    } else {
        if (!e.x16) e.x16 = memory(e.x_rows, eng());
        memory user(f32_rows(p, g.c_in), eng(), (void *)x);
        e.x_reo.run({{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, e.x16}});
        x16 = e.x16;
    }
    memory dy_cols(e.dy_cols, eng(), dy16.get_data_handle());
    e.dw_mm.run({{DNNL_ARG_SRC, dy_cols}, {DNNL_ARG_WEIGHTS, x16},
            {DNNL_ARG_DST, memory(e.dw_md, eng(), dw)}});
    e.db_mm.run({{DNNL_ARG_SRC, e.ones}, {DNNL_ARG_WEIGHTS, dy16},
            {DNNL_ARG_DST, memory(e.db_md, eng(), db)}});
    strm().wait();
}

} // namespace

extern "C" {

int dcnn_conv2d_forward(const float *x, const float *w, const float *b,
        float *y, uint16_t *x_bf16, const int *geom) {
    return guarded("dcnn_conv2d_forward", [&] {
        const Geom g = geometry(geom);
        // x in one form: f32 (its bf16 copy written to x_bf16 if given), or bf16 only.
        const void *src = x ? (const void *)x : (const void *)x_bf16;
        check(g, {src, w, b, y});
        Entry &e = lookup(DCNN_PASS_FORWARD, g);
        std::unordered_map<int, memory> ready;
        std::unordered_map<int, void *> into;
        if (x_bf16) {
            const Arg &a = arg(e, DNNL_ARG_SRC);
            check_kept_input(g, a);
            if (x)
                into[DNNL_ARG_SRC] = x_bf16;
            else
                ready[DNNL_ARG_SRC] = memory(a.prim_md, eng(), x_bf16);
        }
        std::lock_guard<std::mutex> lk(e.mu);
        // oneDNN takes non-const handles; inputs are only read.
        execute_locked(e, {(void *)src, (void *)w, (void *)b, y}, ready, into);
    });
}

int dcnn_conv2d_backward_data(
        const float *w, const float *dy, float *dx, const int *geom) {
    return guarded("dcnn_conv2d_backward_data", [&] {
        const Geom g = geometry(geom);
        check(g, {w, dy, dx});
        execute(lookup(DCNN_PASS_BACKWARD_DATA, g),
                {(void *)w, (void *)dy, dx});
    });
}

int dcnn_conv2d_backward_weights(const float *x, const float *dy, float *dw,
        float *db, const int *geom) {
    return guarded("dcnn_conv2d_backward_weights", [&] {
        const Geom g = geometry(geom);
        check(g, {x, dy, dw, db});
        if (weights_by_matmul(g)) return weights_matmul(g, x, nullptr, dy, nullptr, dw, db);
        execute(lookup(DCNN_PASS_BACKWARD_WEIGHTS, g),
                {(void *)x, (void *)dy, dw, db});
    });
}

int dcnn_conv2d_backward(const float *x, const uint16_t *x_bf16, const float *w,
        const float *dy, float *dx, float *dw, float *db, const int *geom) {
    return guarded("dcnn_conv2d_backward", [&] {
        const Geom g = geometry(geom);
        // x in one form: the caller's f32, or the bf16 copy the forward kept.
        const void *src = x_bf16 ? (const void *)x_bf16 : (const void *)x;
        check(g, {src, w, dy, dw, db});
        if (weights_by_matmul(g)) {
            const void *dy_bf16 = nullptr;
            std::unique_lock<std::mutex> ld; // held while the matmul reads the data pass's buffer
            if (dx) {
                Entry &de = lookup(DCNN_PASS_BACKWARD_DATA, g);
                ld = std::unique_lock<std::mutex>(de.mu);
                execute_locked(de, {(void *)w, (void *)dy, dx});
                // The data pass's bf16 copy of dy is the matmul's operand where it is N×H×W×C_out.
                const Arg &data_dy = arg(de, DNNL_ARG_DIFF_DST);
                if (data_dy.needs_reorder && data_dy.prim_md == memory::desc(g.dst(), dt::bf16, tag::nhwc))
                    dy_bf16 = data_dy.buf.get_data_handle();
            }
            return weights_matmul(g, x_bf16 ? nullptr : x, x_bf16, dy, dy_bf16, dw, db);
        }
        Entry &we = lookup(DCNN_PASS_BACKWARD_WEIGHTS, g);
        std::unordered_map<int, memory> ready;
        if (x_bf16) {
            const Arg &a = arg(we, DNNL_ARG_SRC);
            check_kept_input(g, a);
            ready[DNNL_ARG_SRC] = memory(a.prim_md, eng(), (void *)x_bf16);
        }
        if (!dx) {
            std::lock_guard<std::mutex> lk(we.mu);
            execute_locked(we, {(void *)src, (void *)dy, dw, db}, ready);
            return;
        }
        Entry &de = lookup(DCNN_PASS_BACKWARD_DATA, g);
        std::lock(de.mu, we.mu);
        std::lock_guard<std::mutex> ld(de.mu, std::adopt_lock), lw(we.mu, std::adopt_lock);
        execute_locked(de, {(void *)w, (void *)dy, dx});
        // The weights pass reads the data pass's copy of dy where both chose one layout.
        const Arg &data_dy = arg(de, DNNL_ARG_DIFF_DST), &weights_dy = arg(we, DNNL_ARG_DIFF_DST);
        if (data_dy.needs_reorder && weights_dy.needs_reorder && data_dy.prim_md == weights_dy.prim_md)
            ready[DNNL_ARG_DIFF_DST] = data_dy.buf;
        execute_locked(we, {(void *)src, (void *)dy, dw, db}, ready);
    });
}

const char *dcnn_last_error(void) { return t_last_error.c_str(); }

const char *dcnn_conv2d_impl(int pass, const int *geom) {
    const char *name = nullptr;
    guarded("dcnn_conv2d_impl", [&] {
        const Geom g = geometry(geom);
        check(g, {});
        name = pass == DCNN_PASS_BACKWARD_WEIGHTS && weights_by_matmul(g) ? lookup_matmul(g).impl.c_str()
                                                                          : lookup(pass, g).impl.c_str();
    });
    return name;
}

// The machine's peak: an n×n×n matrix product on all threads, fp32 (dnnl_sgemm)
// or bf16 inputs with f32 output (the matmul primitive, as the bf16
// convolutions compute). The best of `reps` runs after one untimed run.
int dcnn_gemm_seconds(int n, int bf16, int reps, double *best) {
    return guarded("GEMM", [&] {
        if (n <= 0 || n > 16384 || reps <= 0 || !best)
            throw std::invalid_argument("GEMM size or repetitions out of range");
        const memory::dim d = n;
        const size_t len = (size_t)n * n;
        std::vector<float> a(len), b(len), c(len);
        for (size_t i = 0; i < len; ++i) {
            a[i] = (float)((i * 7) % 13) / 13.0f - 0.5f;
            b[i] = (float)((i * 5) % 11) / 11.0f - 0.5f;
        }
        const memory::desc plain({d, d}, dt::f32, tag::ab);
        const memory::desc half({d, d}, dt::bf16, tag::ab);
        std::function<void()> run;
        std::unique_ptr<matmul> mm;
        memory am, bm, cm;
        if (bf16) {
            mm.reset(new matmul(matmul::primitive_desc(matmul::desc(half, half, plain), eng())));
            am = memory(half, eng());
            bm = memory(half, eng());
            cm = memory(plain, eng(), c.data());
            memory af(plain, eng(), a.data()), bf(plain, eng(), b.data());
            reorder(af, am).execute(strm(), af, am);
            reorder(bf, bm).execute(strm(), bf, bm);
            strm().wait();
            run = [&] {
                mm->execute(strm(), {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
                strm().wait();
            };
        } else {
            run = [&] {
                const dnnl_status_t st = dnnl_sgemm('N', 'N', d, d, d, 1.0f, a.data(), d, b.data(), d, 0.0f, c.data(), d);
                if (st != dnnl_success) throw dnnl::error(st, "dnnl_sgemm");
            };
        }
        run();
        *best = 1e30;
        for (int r = 0; r < reps; ++r) {
            const auto t0 = std::chrono::steady_clock::now();
            run();
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (s < *best) *best = s;
        }
    });
}

} // extern "C"
