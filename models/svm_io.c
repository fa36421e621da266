/* svm_io.c: a px_svm: its frame "prognos-svm 1" around LibSVM's model text,
 * load (bytes reach LibSVM's parser only after the frame and a strict check of
 * LibSVM's text format: its parser trusts its input), save, prediction and
 * free; and the one mutex under which LibSVM's global state (its print hook,
 * rand(), setlocale in save/load) is touched. svm.c fits. */
#define _GNU_SOURCE /* memfd_create */
#include "models/svm_int.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* check_libsvm_text accepts exactly what LibSVM 3.24's svm_save_model writes
 * (header lines and their order). Another LibSVM may write its model otherwise:
 * built against one, this file stops compiling, and loaded at run time with one
 * (a shared library other than the header's), px_svm_load refuses, until the
 * checker has been compared with that version's writer and this number moved. */
#define PX_LIBSVM_FORMAT 324
#if !defined(LIBSVM_VERSION) || LIBSVM_VERSION != PX_LIBSVM_FORMAT
#error "models/svm_io.c: the strict LibSVM model reader is written for LibSVM 3.24; compare check_libsvm_text with this version's svm_save_model, then update PX_LIBSVM_FORMAT"
#endif

#define FRAME_MAGIC "prognos-svm 1\n"

pthread_mutex_t svm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t quiet_once = PTHREAD_ONCE_INIT;

static void print_nothing(const char *s) { (void)s; }
static void quiet_init(void) { svm_set_print_string_function(print_nothing); }

void svm_quiet(void) { pthread_once(&quiet_once, quiet_init); }

void px_svm_free(px_svm *s)
{
    if (!s) return;
    if (s->model) svm_free_and_destroy_model(&s->model);
    px_buf_release(&s->frame);
    free(s);
}

size_t px_svm_nsv(const px_svm *s) { return s && s->model ? (size_t)s->model->l : 0; }
size_t px_svm_inputs(const px_svm *s) { return s->k; }
px_svm_type px_svm_kind(const px_svm *s) { return s->type; }
const px_svm_info *px_svm_get_info(const px_svm *s) { return &s->info; }

static void fill_node(const double *x, size_t k, struct svm_node *nd)
{
    size_t q = 0;
    for (size_t a = 0; a < k; a++)
        if (x[a] != 0) {
            nd[q].index = (int)a + 1;
            nd[q].value = x[a];
            q++;
        }
    nd[q].index = -1;
}

/* ---- LibSVM text through a file descriptor -------------------------------- */

/* A memfd (no file on disk) reachable as /proc/self/fd/N, or else a private
 * temporary file (mode 0600) that is unlinked by the caller. */
static int temp_fd(char *path, size_t len, int *unlink_after)
{
    *unlink_after = 0;
    int fd = memfd_create("prognos-svm", MFD_CLOEXEC);
    if (fd >= 0) {
        snprintf(path, len, "/proc/self/fd/%d", fd);
        if (access(path, R_OK | W_OK) == 0) return fd;
        close(fd);
    }
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(path, len, "%s/prognos-svm-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd >= 0) *unlink_after = 1;
    return fd;
}

/* Saves model with svm_save_model and returns its bytes in *out. Under svm_lock. */
int svm_libsvm_bytes(const struct svm_model *model, px_buf *out, px_err *e)
{
    char path[4200];
    int unl, rc = 0;
    int fd = temp_fd(path, sizeof path, &unl);
    if (fd < 0) return px_err_set(e, PX_EIO, "cannot save svm model: no temporary file (%s)", strerror(errno));
    if (svm_save_model(path, model) != 0) {
        rc = px_err_set(e, PX_EIO, "cannot save svm model: LibSVM could not write it");
        goto done;
    }
    struct stat stt;
    if (fstat(fd, &stt) != 0 || stt.st_size < 0) {
        rc = px_err_set(e, PX_EIO, "cannot save svm model: %s", strerror(errno));
        goto done;
    }
    size_t size = (size_t)stt.st_size;
    if (px_buf_reserve(out, size + 1) < 0) {
        rc = px_err_set(e, PX_ENOMEM, "cannot save svm model: out of memory");
        goto done;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(fd, out->data + out->len + got, size - got, (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            rc = px_err_set(e, PX_EIO, "cannot save svm model: short read of LibSVM's file");
            goto done;
        }
        got += (size_t)r;
    }
    out->len += size;
done:
    close(fd);
    if (unl) unlink(path);
    return rc;
}

/* Loads LibSVM text that passed check_libsvm_text. Under svm_lock. */
static struct svm_model *libsvm_from_bytes(const char *text, size_t len, px_err *e)
{
    char path[4200];
    int unl;
    struct svm_model *m = NULL;
    int fd = temp_fd(path, sizeof path, &unl);
    if (fd < 0) {
        px_err_set(e, PX_EIO, "cannot load svm model: no temporary file (%s)", strerror(errno));
        return NULL;
    }
    size_t put = 0;
    while (put < len) {
        ssize_t w = write(fd, text + put, len - put);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            px_err_set(e, PX_EIO, "cannot load svm model: cannot write a temporary file (%s)", strerror(errno));
            goto done;
        }
        put += (size_t)w;
    }
    m = svm_load_model(path);
    if (!m) px_err_set(e, PX_ECORRUPT, "cannot load svm model: LibSVM refused its text");
done:
    close(fd);
    if (unl) unlink(path);
    return m;
}

/* ---- strict check of LibSVM's model text --------------------------------- */

/* Accepts exactly what svm_save_model writes for our models: the header lines
 * in its order, then total_sv lines "coef idx:val ... \n" with indexes strictly
 * increasing in [1, k]. Anything else could make LibSVM's loader read past its
 * arrays, so it is refused. */
static int check_libsvm_text(const char *text, size_t len, px_svm_type type, size_t k, long *nsv_out)
{
    px_tx c = {text, text + len};
    double v;
    long l, a, b;
    if (px_tx_lit(&c, type == PX_SVM_SVC ? "svm_type c_svc\n" : "svm_type epsilon_svr\n") < 0) return -1;
    if (px_tx_lit(&c, "kernel_type rbf\ngamma ") < 0 || px_tx_num(&c, &v) < 0 || !(v > 0) || px_tx_lit(&c, "\n") < 0)
        return -1;
    if (px_tx_lit(&c, "nr_class 2\ntotal_sv ") < 0 || px_tx_int(&c, &l) < 0 || l < 0 || px_tx_lit(&c, "\n") < 0)
        return -1;
    if (px_tx_lit(&c, "rho ") < 0 || px_tx_num(&c, &v) < 0 || px_tx_lit(&c, "\n") < 0) return -1;
    if (type == PX_SVM_SVC) {
        if (px_tx_lit(&c, "label ") < 0 || px_tx_int(&c, &a) < 0 || px_tx_lit(&c, " ") < 0 || px_tx_int(&c, &b) < 0 ||
            px_tx_lit(&c, "\n") < 0 || !((a == 0 && b == 1) || (a == 1 && b == 0)))
            return -1;
        if (px_tx_lit(&c, "probA ") < 0 || px_tx_num(&c, &v) < 0 || px_tx_lit(&c, "\nprobB ") < 0 ||
            px_tx_num(&c, &v) < 0 || px_tx_lit(&c, "\n") < 0)
            return -1;
        if (px_tx_lit(&c, "nr_sv ") < 0 || px_tx_int(&c, &a) < 0 || px_tx_lit(&c, " ") < 0 || px_tx_int(&c, &b) < 0 ||
            px_tx_lit(&c, "\n") < 0 || a < 0 || b < 0 || a + b != l || l < 1)
            return -1;
    }
    if (px_tx_lit(&c, "SV\n") < 0) return -1;
    /* each SV line is at least "0 \n"; bounds l before anything uses it */
    if (l > (c.end - c.p) / 3 + 1) return -1;
    for (long i = 0; i < l; i++) {
        if (px_tx_num(&c, &v) < 0 || px_tx_lit(&c, " ") < 0) return -1;
        long prev = 0;
        while (c.p < c.end && *c.p != '\n') {
            if (px_tx_int(&c, &a) < 0 || a <= prev || (size_t)a > k || px_tx_lit(&c, ":") < 0 ||
                px_tx_num(&c, &v) < 0 || px_tx_lit(&c, " ") < 0)
                return -1;
            prev = a;
        }
        if (px_tx_lit(&c, "\n") < 0) return -1;
    }
    if (c.p != c.end) return -1;
    *nsv_out = l;
    return 0;
}

int px_svm_check_text(const char *text, size_t len, px_svm_type type, size_t k, long *nsv)
{
    return check_libsvm_text(text, len, type, k, nsv);
}

/* ---- the frame ----------------------------------------------------------- */

int svm_frame_build(px_svm *s, const char *text, size_t len, px_err *e)
{
    px_buf *b = &s->frame;
    locale_t loc = px_c_locale(), old = loc ? uselocale(loc) : (locale_t)0;
    const px_svm_info *in = &s->info;
    int bad = px_buf_adds(b, FRAME_MAGIC) < 0 ||
              px_buf_printf(b, "type %s\nk %zu\nscale %.17g %.17g\n", s->type == PX_SVM_SVC ? "svc" : "svr", s->k,
                            s->ymean, s->ysd) < 0 ||
              px_buf_printf(b, "info %zu %zu %zu %zu %.17g %.17g %.17g %.17g\n", in->n_rows, in->n_used, in->n_cv,
                            in->n_sv, in->C, in->gamma, in->cv_score, in->class_weight_pos) < 0 ||
              px_buf_printf(b, "libsvm %zu\n", len) < 0 || px_buf_add(b, text, len) < 0;
    if (old) uselocale(old);
    if (bad) return px_err_set(e, PX_ENOMEM, "cannot save svm model: out of memory");
    if (px_sha256_trailer_add(b) != 0) return px_err_set(e, PX_ENOMEM, "cannot save svm model: out of memory");
    return 0;
}

px_svm *px_svm_load(const unsigned char *bytes, size_t len, px_err *e)
{
    px_svm *s = NULL;
    const char *t = (const char *)bytes;
    if (!bytes) {
        px_err_set(e, PX_ECORRUPT, "cannot load svm model: no bytes");
        return NULL;
    }
    if (libsvm_version != PX_LIBSVM_FORMAT) {
        px_err_set(e, PX_ESTATE, "cannot load svm model: the LibSVM library is version %d, the model reader checks "
                                 "the text format of version %d", libsvm_version, PX_LIBSVM_FORMAT);
        px_err_hint(e, "run prognos with the LibSVM it was built against (Debian 12: libsvm3 3.24)");
        return NULL;
    }
    /* trailer first: "sha256 <64 hex>\n" over everything before it */
    const size_t tl = PX_SHA256_TRAILER_LEN;
    long long covered = len < strlen(FRAME_MAGIC) + tl ? PX_TRAILER_MISSING : px_sha256_trailer_check(bytes, len);
    if (covered == PX_TRAILER_MISSING) {
        px_err_set(e, PX_ECORRUPT, "cannot load svm model: truncated or not an svm model frame");
        return NULL;
    }
    if (covered < 0) {
        px_err_set(e, PX_ECORRUPT, "cannot load svm model: checksum mismatch (corrupt or truncated)");
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        px_err_set(e, PX_ENOMEM, "cannot load svm model: out of memory");
        return NULL;
    }
    px_tx c = {t, t + len - tl};
    size_t plen = 0;
    long nsv = 0;
    locale_t loc = px_c_locale(), old = loc ? uselocale(loc) : (locale_t)0;
    int bad = px_tx_lit(&c, FRAME_MAGIC) < 0 || px_tx_lit(&c, "type ") < 0;
    if (!bad) {
        if (px_tx_lit(&c, "svc\n") == 0)
            s->type = PX_SVM_SVC;
        else if (px_tx_lit(&c, "svr\n") == 0)
            s->type = PX_SVM_SVR;
        else
            bad = 1;
    }
    px_svm_info *in = &s->info;
    bad = bad || px_tx_lit(&c, "k ") < 0 || px_tx_size(&c, &s->k) < 0 || s->k < 1 || s->k >= INT_MAX ||
          px_tx_lit(&c, "\nscale ") < 0 || px_tx_num(&c, &s->ymean) < 0 || px_tx_lit(&c, " ") < 0 ||
          px_tx_num(&c, &s->ysd) < 0 || !(s->ysd > 0) || px_tx_lit(&c, "\ninfo ") < 0 ||
          px_tx_size(&c, &in->n_rows) < 0 || px_tx_lit(&c, " ") < 0 || px_tx_size(&c, &in->n_used) < 0 ||
          px_tx_lit(&c, " ") < 0 || px_tx_size(&c, &in->n_cv) < 0 || px_tx_lit(&c, " ") < 0 ||
          px_tx_size(&c, &in->n_sv) < 0 || px_tx_lit(&c, " ") < 0 || px_tx_gnum(&c, &in->C) < 0 ||
          px_tx_lit(&c, " ") < 0 || px_tx_gnum(&c, &in->gamma) < 0 || px_tx_lit(&c, " ") < 0 ||
          px_tx_gnum(&c, &in->cv_score) < 0 || px_tx_lit(&c, " ") < 0 || px_tx_gnum(&c, &in->class_weight_pos) < 0 ||
          px_tx_lit(&c, "\nlibsvm ") < 0 || px_tx_size(&c, &plen) < 0 || px_tx_lit(&c, "\n") < 0 ||
          plen != (size_t)(c.end - c.p) || in->n_used > in->n_rows || in->n_cv > in->n_used;
    if (!bad && s->type == PX_SVM_SVC && !(s->ymean == 0 && s->ysd == 1)) bad = 1;
    if (!bad) bad = check_libsvm_text(c.p, plen, s->type, s->k, &nsv) < 0 || (size_t)nsv != in->n_sv;
    if (old) uselocale(old);
    if (bad) {
        px_err_set(e, PX_ECORRUPT, "cannot load svm model: malformed frame or LibSVM text");
        goto fail;
    }
    svm_quiet();
    pthread_mutex_lock(&svm_lock);
    s->model = libsvm_from_bytes(c.p, plen, e);
    pthread_mutex_unlock(&svm_lock);
    if (!s->model) goto fail;
    /* what LibSVM read must be what was checked */
    if (s->model->l != nsv || s->model->nr_class != 2 ||
        (s->type == PX_SVM_SVC
             ? (s->model->param.svm_type != C_SVC || !svm_check_probability_model(s->model) || !s->model->label)
             : s->model->param.svm_type != EPSILON_SVR)) {
        px_err_set(e, PX_ECORRUPT, "cannot load svm model: LibSVM read something other than the checked text");
        goto fail;
    }
    s->pos = s->type == PX_SVM_SVC && s->model->label[1] == 1 ? 1 : 0;
    if (px_buf_add(&s->frame, bytes, len) < 0) {
        px_err_set(e, PX_ENOMEM, "cannot load svm model: out of memory");
        goto fail;
    }
    return s;
fail:
    px_svm_free(s);
    return NULL;
}

int px_svm_save(const px_svm *s, px_buf *out, px_err *e)
{
    if (!s || !s->frame.len) return px_err_set(e, PX_EINVAL, "cannot save svm model: no model");
    if (px_buf_add(out, s->frame.data, s->frame.len) < 0)
        return px_err_set(e, PX_ENOMEM, "cannot save svm model: out of memory");
    return 0;
}

/* ---- prediction ---------------------------------------------------------- */

double px_svm_predict(const px_svm *s, const double *x)
{
    struct svm_node stack[257], *nd = stack;
    if (s->k + 1 > sizeof stack / sizeof stack[0]) {
        nd = malloc((s->k + 1) * sizeof *nd);
        if (!nd) return NAN;
    }
    fill_node(x, s->k, nd);
    double v;
    if (s->type == PX_SVM_SVC) {
        double pr[2];
        svm_predict_probability(s->model, nd, pr);
        v = pr[s->pos];
    } else {
        v = s->ymean + s->ysd * svm_predict(s->model, nd);
    }
    if (nd != stack) free(nd);
    return v;
}
