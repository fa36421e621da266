/* train_int.h: what registry's training (train.c) offers its retraining
 * (retrain.c): one training run's state and its steps. retrain.c calls train.c,
 * never the other way. registry/ only. */
#ifndef PROGNOS_REGISTRY_TRAIN_INT_H
#define PROGNOS_REGISTRY_TRAIN_INT_H

#include "registry/internal.h"

/* One training run's state, shared by px_train and px_retrain. */
typedef struct reg_job {
    const px_feat_set_info *set;
    char name[64];
    char table[256];
    char label[64];
    px_dataset *d;
    size_t *train, *test;
    size_t ntrain, ntest;
    int32_t cutoff;            /* first day of the held-out period; 0 = none */
    const char *method;        /* the split actually used, for split.json */
    int32_t min_cutoff;        /* retraining without patient groups: the champion's cutoff (0 = none) */
    int binary;
    px_fit_params fp;
    px_fit_info fi;
    px_model *m;
    double *test_scores;
    px_eval_bin eb;
    px_eval_reg er;
    char *metrics_json, *split_json, *params_json, *reference_json, *calibration_csv, *batches_json;
    char *gates_json;          /* the quality gates' verdict (px_gate_eval) */
    px_gate_params gp;         /* the gates applied (part of the version's params: another
                                * policy is another registration) */
    int gates_passed;
    char gates_summary[1024];
    char *hier_json;           /* hierarchical.json, or NULL (see hier.c) */
    char hier_note[320];
} reg_job;

void reg_job_release(reg_job *j);
/* Loads the dataset, splits, fits and evaluates. extra_features: columns to load
 * beside the model's own (the champion's, to score it on the same rows). */
int reg_job_run(PGconn *c, const px_config *cfg, const px_train_params *p, const char *const *extra_features,
                reg_job *j, px_err *e);
/* Registers the run's version (*version); PX_ENOTHING when an identical one exists. */
int reg_job_register(PGconn *c, const px_config *cfg, reg_job *j, int *version, px_err *e);
/* Records a promotion decision in registry.decisions (and audit.events). 0 or PX_EDB. */
int reg_record_decision(PGconn *c, const char *name, int candidate, int champion, const char *decision,
                        const char *gates_json, const char *metrics_json, const char *message, px_err *e);

#endif
