/* fakewatch C ABI example: score the faces of a binary PPM (P6) image pushed
 * N times as a stream, then print the verdict.
 *   cc detect.c -I../include -L<target>/debug -lfakewatch -o detect
 *   ./detect models/default photo.ppm [frames [public-key-hex]]
 * With a public key the bundle must be signed by it (fw_open_signed).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fakewatch.h"

static unsigned char *read_ppm(const char *path, uint32_t *w, uint32_t *h) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned maxval = 0;
  if (fscanf(f, "P6 %u %u %u", w, h, &maxval) != 3 || maxval != 255 || fgetc(f) == EOF) {
    fclose(f);
    return NULL;
  }
  size_t len = (size_t)*w * *h * 3;
  unsigned char *px = malloc(len);
  if (px && fread(px, 1, len, f) != len) {
    free(px);
    px = NULL;
  }
  fclose(f);
  return px;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s BUNDLE_DIR IMAGE.ppm [FRAMES [PUBLIC_KEY_HEX]]\n", argv[0]);
    return 2;
  }
  int frames = argc > 3 ? atoi(argv[3]) : 2;
  uint32_t w = 0, h = 0;
  unsigned char *px = read_ppm(argv[2], &w, &h);
  if (!px) {
    fprintf(stderr, "cannot read %s as binary PPM\n", argv[2]);
    return 2;
  }
  printf("fakewatch %s\n", fw_version());
  FwDetector *d = argc > 4 ? fw_open_signed(argv[1], argv[4]) : fw_open(argv[1]);
  if (!d) {
    fprintf(stderr, "fw_open: %s\n", fw_last_error());
    free(px);
    return 1;
  }
  /* A wrong stride is refused with a message, not a crash. */
  FwFace faces[16];
  if (fw_push_frame(d, px, (size_t)w * h * 3, w, h, w * 3 - 1, FW_PIXEL_FORMAT_RGB8, faces, 16) != -1) {
    fprintf(stderr, "a bad stride was accepted\n");
    return 1;
  }
  printf("bad stride: %s\n", fw_last_error());
  for (int i = 0; i < frames; i++) {
    int32_t n = fw_push_frame(d, px, (size_t)w * h * 3, w, h, (size_t)w * 3, FW_PIXEL_FORMAT_RGB8, faces, 16);
    if (n < 0) {
      fprintf(stderr, "fw_push_frame: %s\n", fw_last_error());
      return 1;
    }
    printf("frame %d: %d faces\n", i, n);
    for (int k = 0; k < n && k < 16; k++)
      printf("  face track=%lld box=[%.1f %.1f %.1f %.1f] det=%.3f p_fake=%.4f\n", (long long)faces[k].track,
             faces[k].x1, faces[k].y1, faces[k].x2, faces[k].y2, faces[k].detection_score, faces[k].p_fake);
  }
  FwVerdict v;
  if (fw_verdict(d, &v) != 0) {
    fprintf(stderr, "fw_verdict: %s\n", fw_last_error());
    return 1;
  }
  const char *label = v.label == FW_LABEL_FAKE ? "fake" : v.label == FW_LABEL_REAL ? "real" : "unknown";
  printf("verdict: %s score=%.4f threshold=%.4f tracks=%u frames=%llu faces=%llu\n", label,
         isnan(v.score) ? -1.0 : v.score, v.threshold, v.tracks, (unsigned long long)v.frames,
         (unsigned long long)v.faces);
  fw_close(d);
  free(px);
  return 0;
}
