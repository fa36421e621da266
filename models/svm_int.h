/* svm_int.h: what svm.c (fitting) and svm_io.c (the px_svm: frame, load,
 * save, prediction) share. Only these two files include it. */
#ifndef PROGNOS_MODELS_SVM_INT_H
#define PROGNOS_MODELS_SVM_INT_H

#include "models/internal.h"
#include <libsvm/svm.h>
#include <pthread.h>

struct px_svm {
    px_svm_type type;
    size_t k;
    double ymean, ysd;       /* SVR: LibSVM fits (y - ymean) / ysd; SVC: 0, 1 */
    int pos;                 /* SVC: index of label 1 in the model's label order */
    struct svm_model *model; /* owned; from svm_load_model (free_sv = 1) */
    px_svm_info info;
    px_buf frame; /* the bytes px_svm_save returns */
};

/* LibSVM's global state (its print hook, rand(), setlocale in save/load) is
 * touched only under this mutex; svm_quiet (once) silences its printing. */
extern pthread_mutex_t svm_lock;
void svm_quiet(void);
/* Saves model with svm_save_model and returns its bytes in *out. Under svm_lock. */
int svm_libsvm_bytes(const struct svm_model *model, px_buf *out, px_err *e);
/* Builds s->frame around LibSVM's text: 0 or -1 with e set. */
int svm_frame_build(px_svm *s, const char *text, size_t len, px_err *e);

#endif
