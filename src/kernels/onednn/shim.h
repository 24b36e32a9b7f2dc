/* Plain-C interface to oneDNN 2.6 fp32 2-D convolutions (training passes).
 *
 * All tensors are dense row-major float32:
 *   x, dx : N x C_in  x H    x W      (NCHW; with nhwc = 1 N x H x W x C_in)
 *   w, dw : C_out x C_in x KH x KW    (OIHW)
 *   b, db : C_out
 *   y, dy : N x C_out x H_out x W_out (NCHW; with nhwc = 1 N x H_out x W_out x C_out)
 * with H_out = (H + 2*pad_h - KH) / stride_h + 1 (likewise W_out); padding is
 * symmetric and there is no dilation or grouping. With bf16 = 1 the inputs (x, w,
 * dy) are rounded to bfloat16 inside the call and the convolution accumulates and
 * writes float32 (mixed precision, as PyTorch's autocast); bf16 = 0 is float32.
 *
 * Every function returns 0 on success and one of the DCNN_E* codes otherwise;
 * dcnn_last_error() then describes the failure. The functions may be called
 * from several threads at once.
 */
#ifndef DCNN_ONEDNN_SHIM_H
#define DCNN_ONEDNN_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DCNN_OK 0
#define DCNN_EINVAL 1 /* bad geometry or a NULL pointer */
#define DCNN_EDNNL 2  /* oneDNN refused or failed (e.g. unimplemented) */
#define DCNN_EOTHER 3 /* anything else, e.g. out of memory */

/* A geometry: DCNN_GEOMETRY_LEN ints, in this order:
 * n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_h, pad_w, bf16, nhwc. */
#define DCNN_GEOMETRY_LEN 13

#define DCNN_PASS_FORWARD 0
#define DCNN_PASS_BACKWARD_DATA 1
#define DCNN_PASS_BACKWARD_WEIGHTS 2

/* y = conv(x, w) + b   (prop_kind forward_training). With x_bf16 (else NULL;
 * bf16 = 1 and nhwc = 1 only) the bf16 copy of x the convolution reads,
 * N x H x W x C_in, is written there, for dcnn_conv2d_backward; with x NULL,
 * x_bf16 is the input (already bf16). */
int dcnn_conv2d_forward(const float *x, const float *w, const float *b,
        float *y, uint16_t *x_bf16, const int *geometry);

/* dx = dL/dx given w and dy (dx is overwritten, not accumulated) */
int dcnn_conv2d_backward_data(const float *w, const float *dy, float *dx,
        const int *geometry);

/* dw = dL/dw, db = dL/db given x and dy (both overwritten) */
int dcnn_conv2d_backward_weights(const float *x, const float *dy, float *dw,
        float *db, const int *geometry);

/* Both backward passes: dx (skipped when dx is NULL), dw and db, reordering dy
 * into the primitives' layout once for both. x is the f32 input, or (x NULL)
 * x_bf16 is the copy dcnn_conv2d_forward kept: no conversion of x again. */
int dcnn_conv2d_backward(const float *x, const uint16_t *x_bf16, const float *w,
        const float *dy, float *dx, float *dw, float *db, const int *geometry);

/* Message for the last failure on the calling thread ("" if none yet). Not
 * cleared by later successful calls; the pointer stays valid until the
 * thread's next failing call. */
const char *dcnn_last_error(void);

/* oneDNN's implementation name for a pass (DCNN_PASS_*) and geometry, e.g.
 * "jit:avx512_core" ("matmul:" and the matmul's name for the weight gradient of a
 * 1x1, stride-1, unpadded convolution in bf16 with nhwc = 1, which is computed as a
 * matrix product); creates and caches the primitive if needed. NULL on failure.
 * The string lives as long as the process. */
const char *dcnn_conv2d_impl(int pass, const int *geometry);

#ifdef __cplusplus
}
#endif

#endif
