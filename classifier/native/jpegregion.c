/* Region decoding of a JPEG through libjpeg(-turbo)'s own API: decode only the rows and columns a window needs.
 *
 * Loaded with ctypes by classifier/jpeg_region.py; built by `make native` (cc -shared ... -ljpeg). It has no
 * Python dependency, so one build serves every interpreter, and errors come back as a return code and a
 * message instead of libjpeg's default exit(): error_exit longjmps back here.
 *
 * Identity with a full decode: libjpeg-turbo treats the edges of a cropped/skipped area as image edges when it
 * upsamples chroma, so the decoded area carries a margin of one iMCU on every side of the window (clamped to the
 * image) and only the window is copied out. Rows below the window are never entropy-decoded: the decode stops.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

enum { JR_OK = 0, JR_ERROR = 1, JR_UNSUPPORTED = 2 };

struct jr_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char *msg;
  int msg_len;
};

static void jr_error_exit(j_common_ptr cinfo) {
  struct jr_error *err = (struct jr_error *)cinfo->err;
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  if (err->msg && err->msg_len > 0) snprintf(err->msg, (size_t)err->msg_len, "%s", text);
  longjmp(err->jump, 1);
}

/* Pillow ignores libjpeg's warnings (corrupt-data recoveries), so a full decode and this one agree. */
static void jr_emit_message(j_common_ptr cinfo, int level) {
  (void)cinfo;
  (void)level;
}

int jr_lib_version(void) { return JPEG_LIB_VERSION; }

/* Decode stored (pre-EXIF-orientation) pixels [x, x+w) x [y, y+h) as RGB into out (h rows of w*3 bytes).
 * Returns JR_UNSUPPORTED for colour spaces Pillow converts differently (CMYK, YCCK), JR_ERROR with msg set
 * for anything libjpeg refuses. */
int jr_decode_region(const unsigned char *data, unsigned long size, int x, int y, int w, int h, unsigned char *out,
                     char *msg, int msg_len) {
  struct jpeg_decompress_struct cinfo;
  struct jr_error err;
  unsigned char *volatile row = NULL; /* volatile: freed after a longjmp */
  volatile int status = JR_OK;

  memset(&cinfo, 0, sizeof(cinfo));
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jr_error_exit;
  err.pub.emit_message = jr_emit_message;
  err.msg = msg;
  err.msg_len = msg_len;
  if (msg && msg_len > 0) msg[0] = '\0';
  if (setjmp(err.jump)) {
    free(row);
    jpeg_destroy_decompress(&cinfo);
    return JR_ERROR;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space != JCS_YCbCr && cinfo.jpeg_color_space != JCS_RGB &&
      cinfo.jpeg_color_space != JCS_GRAYSCALE) {
    status = JR_UNSUPPORTED;
    goto done;
  }
  if (x < 0 || y < 0 || w < 1 || h < 1 || (JDIMENSION)(x + w) > cinfo.image_width ||
      (JDIMENSION)(y + h) > cinfo.image_height) {
    if (msg && msg_len > 0)
      snprintf(msg, (size_t)msg_len, "window %dx%d at (%d, %d) is outside the %ux%u image", w, h, x, y,
               cinfo.image_width, cinfo.image_height);
    status = JR_ERROR;
    goto done;
  }
  /* The settings of Pillow's decoder: RGB out, accurate integer IDCT, fancy upsampling (the libjpeg defaults). */
  cinfo.out_color_space = JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;
  cinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&cinfo);

  {
    int imcu_w = cinfo.max_h_samp_factor * DCTSIZE, imcu_h = cinfo.max_v_samp_factor * DCTSIZE;
    int width = (int)cinfo.output_width;
    int x0 = x - imcu_w < 0 ? 0 : x - imcu_w;
    int x1 = x + w + imcu_w > width ? width : x + w + imcu_w;
    int y0 = y - imcu_h < 0 ? 0 : y - imcu_h;
    JDIMENSION crop_x = (JDIMENSION)x0, crop_w = (JDIMENSION)(x1 - x0);
    int r;
    if (crop_x != 0 || crop_w != (JDIMENSION)width) jpeg_crop_scanline(&cinfo, &crop_x, &crop_w); /* widens to iMCUs */
    row = (unsigned char *)malloc((size_t)cinfo.output_width * (size_t)cinfo.output_components);
    if (!row) {
      if (msg && msg_len > 0) snprintf(msg, (size_t)msg_len, "out of memory");
      status = JR_ERROR;
      goto done;
    }
    if (y0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)y0);
    for (r = y0; r < y + h; r++) {
      JSAMPROW rowp = row;
      if (jpeg_read_scanlines(&cinfo, &rowp, 1) != 1) {
        if (msg && msg_len > 0) snprintf(msg, (size_t)msg_len, "decoder returned no row %d", r);
        status = JR_ERROR;
        goto done;
      }
      if (r >= y) memcpy(out + (size_t)(r - y) * (size_t)w * 3, row + (size_t)(x - (int)crop_x) * 3, (size_t)w * 3);
    }
  }

done:
  free(row);
  jpeg_abort_decompress(&cinfo); /* stop here: the rows below the window are never read */
  jpeg_destroy_decompress(&cinfo);
  return status;
}
