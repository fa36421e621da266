/* registry.h: versioned models with signed artifacts, aliases, drift references,
 * model cards, and the training and retraining jobs built on them.
 *
 * Versions live in PostgreSQL (registry.versions), artifacts on disk under
 * $PROGNOS_HOME/registry/<model>/<version>/. manifest.json lists every artifact
 * file with its SHA-256 and is signed with the installation's Ed25519 key
 * (manifest.sig). Nothing is loaded before digest and signature check out. */
#ifndef PROGNOS_REGISTRY_H
#define PROGNOS_REGISTRY_H

#include "models/models.h"

/* ---- keys ---------------------------------------------------------------- */

/* Creates the signing key pair if absent: $PROGNOS_HOME/signing.key (PKCS#8 PEM,
 * mode 0600) and signing.pub (PEM). PROGNOS_SIGNING_KEY names another private
 * key file. Idempotent. Returns 0 or PX_EIO. */
int px_reg_keygen(const px_config *cfg, px_err *e);

/* ---- versions -------------------------------------------------------------- */

typedef struct px_reg_new {
    const char *name;             /* model name: readmission, mortality, los, or [a-z][a-z0-9_]{0,62} */
    const char *algo;             /* px_algo_name() */
    const char *task;             /* "binary" or "regression" */
    const char *params_json;      /* fit parameters (JSON object) */
    const char *feature_set;      /* built-in set name, or "" for a user's table */
    const char *feature_table;    /* schema.table */
    const char *label;
    const char *definition_hash;  /* the feature set's, or "" */
    const char *fingerprint;      /* training data SHA-256 (px_dataset.fingerprint) */
    const char *split_json;       /* holdout definition and row counts (JSON object) */
    const char *metrics_json;     /* evaluation: overall, by sex, by age band (JSON object) */
    const char *calibration_csv;  /* calibration table by decile of risk ("" for regression) */
    const char *reference_json;   /* reference distributions (px_reg_reference_json) */
    const px_model *model;        /* serialized with px_model_save */
    const char *source_batches;   /* JSON array of etl batch ids the features came from */
    const char *hierarchical_json;/* NULL or "": none; else hierarchical.json (px_hier_json), a signed file */
} px_reg_new;

/* Registers a version: writes and signs the artifact directory, then inserts the
 * row, in that order (a failed insert removes the directory). Versions number
 * from 1 per model. If a version with the same fingerprint, algorithm, params
 * and definition hash exists, nothing is written: returns PX_ENOTHING with
 * *version set to it. Otherwise returns 0 with *version set. Runs its own
 * transaction (PX_ESTATE if c is inside one); creates the key pair if absent. */
int px_reg_register(PGconn *c, const px_config *cfg, const px_reg_new *v, int *version, px_err *e);

/* Resolves a reference: "3", "v3", "champion", "challenger", "latest"; NULL or ""
 * means the champion if there is one, else the latest version. PX_ENOTFOUND
 * names what is missing (the model, the version or the alias), PX_EINVAL a bad reference. */
int px_reg_resolve(PGconn *c, const char *name, const char *ref, int *version, px_err *e);

/* Checks every file of the artifact against the manifest and the manifest's
 * signature against the public key, the manifest's and model's digests against
 * the row, that no unlisted file sits in the directory, and that model.bin and the
 * JSON files parse. 0, or PX_ECORRUPT naming the file and what is wrong. */
int px_reg_verify(PGconn *c, const px_config *cfg, const char *name, int version, px_err *e);

/* Verified read of one artifact file (e.g. "metrics.json") into memory; caller frees *data. */
int px_reg_read_file(const px_config *cfg, const char *name, int version, const char *file, unsigned char **data,
                     size_t *len, px_err *e);

/* Verified load of the model from a directory, knowing only the public key:
 * reads the manifest, checks its signature, checks every other listed file's
 * size and digest, reads model.bin into memory, checks its digest, then parses
 * it. A directory in the registry's layout (.../<name>/<version>) must hold that
 * version's signed manifest. It cannot tell a manifest re-signed with this
 * installation's key from the registered one: for inspecting a copied
 * directory only; whatever serves or scores a registered version loads it with
 * px_reg_load / px_reg_load_version. Caller frees with px_model_free; NULL with
 * PX_ECORRUPT on any mismatch. Every artifact file is opened without following
 * symbolic links and without blocking, and only regular files are read. */
px_model *px_reg_load_dir(const char *dir, const char *pubkey_path, px_err *e);
/* The load of a registered version, used by every caller that serves or scores
 * one (the server's start and reload, drift check, KPIs, retraining): everything
 * px_reg_load_dir checks, and first that manifest.json's SHA-256 and model.bin's
 * are the ones recorded in registry.versions when the version was registered.
 * extra (may be NULL): also reads that listed file from the same verified
 * manifest into *data / *len (caller frees; *data stays NULL when the manifest
 * does not list it). NULL with PX_ENOTFOUND (no such version), PX_EDB, or
 * PX_ECORRUPT naming the file and what differs. */
px_model *px_reg_load_version(PGconn *c, const px_config *cfg, const char *name, int version, const char *extra,
                              unsigned char **data, size_t *len, px_err *e);
/* Same, by name and reference; *version receives the resolved version. */
px_model *px_reg_load(PGconn *c, const px_config *cfg, const char *name, const char *ref, int *version, px_err *e);

/* Points alias ("champion" or "challenger"; NULL: champion) at a version; recorded
 * in registry.alias_history and audit.events. The version's artifacts are verified
 * first (px_reg_verify): one that fails is refused with its error wrapped ("cannot
 * promote ...: it failed verification", the cause in the detail). PX_ENOTHING when
 * the alias already points there. Runs its own transaction. */
int px_reg_promote(PGconn *c, const px_config *cfg, const char *name, int version, const char *alias,
                   const char *reason, px_err *e);

/* Reports: a table (or JSON) of every model and version with its aliases and headline metrics. */
int px_reg_list(PGconn *c, int json, FILE *out, px_err *e);
/* One version: everything in its row plus its metrics, coefficients and drift reference summary. */
int px_reg_show(PGconn *c, const px_config *cfg, const char *name, const char *ref, int json, FILE *out, px_err *e);
/* A model card in Markdown: intended use, cohort, features, metrics, subgroup
 * calibration, limitations. */
int px_reg_card(PGconn *c, const px_config *cfg, const char *name, const char *ref, FILE *out, px_err *e);

/* ---- reads for other folders (reads.c) -------------------------------------
 * SQL tables are not an API between folders: kpi, serve and the CLI read the
 * registry through these, never registry.versions / registry.aliases directly. */

typedef struct px_reg_version_brief {
    char name[64];
    int version;
    char algo[64];
    char task[16];              /* "binary" or "regression" */
    char feature_table[160];    /* schema.table */
    char *source_batches;       /* JSON array of etl batch ids (owned) */
} px_reg_version_brief;

/* The champions, by name: every model's (name NULL or "") or that model's (0 or 1
 * row). servable_only: only a champion that may serve -- one that passed its gates,
 * was accepted at training, or predates the gates. Caller frees with
 * px_reg_briefs_free. 0 or PX_EDB (what names the caller's context). */
int px_reg_champions(PGconn *c, const char *name, int servable_only, const char *what, px_reg_version_brief **out,
                     size_t *n, px_err *e);
/* Every version (name NULL or "": of every model), by name and version. */
int px_reg_versions(PGconn *c, const char *name, px_reg_version_brief **out, size_t *n, px_err *e);
void px_reg_briefs_free(px_reg_version_brief *v, size_t n);

/* What a consumer of one version records and shows. */
typedef struct px_reg_version_row {
    int version;
    char algo[64];
    char feature_table[160];
    char label[64];
    char *summary_json;  /* {"version", "algo", "feature_table", "label", "fingerprint", "created_at", "auc",
                          * "source_batches"}: the provenance a KPI run records (owned) */
    double auc, auc_lo, auc_hi, events; /* metrics.overall of the holdout; NAN when absent */
} px_reg_version_row;

/* One version's row: 0, PX_ENOTFOUND (no such version; e not filled) or PX_EDB.
 * Free with px_reg_version_row_free. */
int px_reg_version_info(PGconn *c, const char *name, int version, px_reg_version_row *out, px_err *e);
void px_reg_version_row_free(px_reg_version_row *v);

/* The server's /v1/models document: {"models": [{name, aliases, versions: [...]}]},
 * JSON text the caller frees. 0 or PX_EDB. */
int px_reg_models_json(PGconn *c, char **json, px_err *e);

/* Reference distributions for drift monitoring, from the training rows: per
 * feature, numeric: decile edges and the share of rows in each bin, plus missing share;
 * categorical: the share of each level; and the same for the score. JSON text, caller frees. */
char *px_reg_reference_json(const px_model *m, const px_dataset *d, const size_t *rows, size_t n,
                            const double *scores, px_err *e);

/* ---- quality gates (gates.c) ---------------------------------------------- */

/* What a version must show at registration before it may become champion, serve
 * or adjust KPIs (the reasons for each default are in gates.c). */
typedef struct px_gate_params {
    double min_epp;             /* events per candidate parameter in the training rows (binary: the rarer
                                 * class; numeric outcome: rows) (default 10) */
    double min_holdout_events;  /* the rarer class in the holdout (numeric outcome: rows) (default 20) */
    double min_auc_lo;          /* the holdout AUC's lower 95% bound must exceed this (default 0.5) */
    double slope_lo, slope_hi;  /* holdout calibration slope within (default 0.5 .. 1.5) */
    double max_value;           /* numeric outcome: no training prediction above this (default INFINITY;
                                 * the built-in LOS model: PX_MODEL_LOS_MAX_DAYS) */
    double max_rmse_over_mean;  /* numeric outcome: holdout RMSE at most (1 + this) x the mean-only
                                 * model's (default 0.05) */
} px_gate_params;

px_gate_params px_gate_default_params(void);

/* The figures the gates look at (train.c gathers them from the fit and the holdout). */
typedef struct px_gate_input {
    int binary, glm;            /* 0/1 outcome; a GLM (separation and convergence apply) */
    size_t n_train, n_test;
    double train_events, test_events; /* binary: rows with outcome 1 */
    size_t n_params;            /* candidate parameters: design columns of every input, dropped ones as 1 */
    int separation, converged;
    double auc_lo, cal_slope;   /* binary, holdout; NAN when undefined (fails its gate) */
    double rmse, rmse_mean;     /* numeric, holdout: the model's RMSE and the mean-only model's */
    const double *train_pred;   /* the model's predictions on its n_pred training rows */
    size_t n_pred;
    int accepted;               /* the operator accepted a failure (--accept-failed-gates) */
} px_gate_input;

/* Evaluates every gate. Returns JSON text the caller frees: {"passed", "accepted",
 * "failed": [gate names], "checks": [{"gate", "passed", "value", "threshold", "why",
 * "fix"?}], "params"}; *passed (may be NULL) gets 1 or 0; summary (may be NULL)
 * receives "gate: why (fix: ...)" for each failed gate, "; "-separated. NULL on
 * out of memory. */
char *px_gate_eval(const px_gate_params *p, const px_gate_input *in, int *passed, char *summary, size_t slen);

/* The stored verdict of a version: *passed 1 (also for a version registered before
 * the gates existed) or 0; *accepted 1 when a failure was accepted; failed (may be
 * NULL) receives the failed gates' names, ", "-separated. 0, PX_ENOTFOUND or PX_EDB. */
int px_reg_gates_status(PGconn *c, const char *name, int version, int *passed, int *accepted, char *failed,
                        size_t flen, px_err *e);

/* Marks a failed version as accepted (it may then be champion, serve and adjust
 * KPIs) and records that in registry.decisions with the reason. A version that
 * passed is left alone. 0 or PX_EDB. */
int px_reg_accept_gates(PGconn *c, const char *name, int version, const char *reason, px_err *e);

/* ---- training and retraining jobs (train.c) -------------------------------- */

typedef struct px_train_params {
    const char *model;            /* registry name: readmission | mortality | los | any name with table */
    const char *table;            /* NULL: the built-in set of that name */
    const char *label;            /* NULL: the set's */
    const char *const *features;  /* NULL-terminated or NULL: the set's default features / all */
    px_algo algo;
    int algo_given;               /* 0: logit for a 0/1 label, poisson otherwise */
    double l2;
    double holdout_time_share;    /* latest share of prediction times held out (default 0.25) */
    double holdout_patient_share; /* share of patients in the holdout group (default 0.3) */
    int build_features;           /* 1: (re)build the built-in set first */
    px_gate_params gates;         /* quality gates at registration (px_gate_default_params) */
    int accept_failed_gates;      /* 1: a version that fails its gates may still become the first
                                   * champion; recorded in registry.decisions */
    px_hier_params hier;          /* the hierarchical model fitted beside a logit/poisson model on a
                                   * table with facility_id (hier.boot: bootstrap draws, default 20) */
    int no_hier;                  /* 1: do not fit it */
    size_t svm_max_rows;          /* svc/svr: the training-size policy's row limit; 0: the default
                                   * (px_svm_default_params, 10,000). Part of the version's params */
} px_train_params;

px_train_params px_train_default_params(void);

typedef struct px_train_result {
    int version;
    int created;                  /* 0 when an identical version existed */
    size_t n_train, n_test;
    double auc, auc_lo, auc_hi;   /* binary */
    double rmse, r2;              /* regression */
    char summary[512];
    int gates_passed;             /* 0: the version failed a quality gate (gates_summary says which) */
    int gates_accepted;           /* failed, but --accept-failed-gates */
    int champion;                 /* 1: the version is the champion after this call */
    char gates_summary[1024];     /* failed gates with what would fix them, "" when all passed */
    char gates_failed[256];       /* the failed gates' names, ","-separated, "" when all passed */
    char hierarchical[320];       /* "hierarchical model: ..." or "no hierarchical model: why" ("" when not tried) */
} px_train_result;

/* Trains, evaluates, applies the quality gates and registers a version (also when
 * it fails them: the failure is in its record). The first version of a model
 * becomes its champion only if it passed its gates (or p->accept_failed_gates).
 * Returns 0 (r->gates_passed says whether the gates passed), or a negative code. */

int px_train(PGconn *c, const px_config *cfg, const px_train_params *p, px_train_result *r, px_err *e);

typedef struct px_retrain_params {
    double max_auc_drop;          /* gate: candidate AUC >= champion AUC - this (default 0.01) */
    double slope_lo, slope_hi;    /* gate: calibration slope within (default 0.8 .. 1.2) */
    double max_rmse_rise;         /* gate for regression: relative RMSE rise allowed (default 0.02) */
    px_gate_params gates;         /* the candidate's quality gates (px_gate_default_params) */
    px_hier_params hier;          /* the candidate's hierarchical model (px_hier_default_params:
                                   * hier.boot bootstrap draws, default 20; not part of the version) */
} px_retrain_params;

px_retrain_params px_retrain_default_params(void);

/* Retrains one model: builds features, trains, evaluates the candidate and the
 * champion on the same holdout, applies the gates, promotes or keeps, and
 * writes a decision record (registry.decisions). Returns 0 when promoted,
 * PX_ENOTHING when the champion was kept (or the data had not changed),
 * negative on failure. */
int px_retrain(PGconn *c, const px_config *cfg, const char *model, const px_retrain_params *p, FILE *report,
               px_err *e);

/* What px_retrain_ex did with one model, for a scheduler's exit code. */
typedef enum {
    PX_RETRAIN_PROMOTED,     /* the candidate is the new champion */
    PX_RETRAIN_KEPT,         /* the candidate lost to the champion: kept */
    PX_RETRAIN_UNCHANGED,    /* data and parameters unchanged: nothing trained */
    PX_RETRAIN_GATES_FAILED, /* the candidate failed its quality gates: registered, not promoted */
    PX_RETRAIN_FAILED        /* an error (the return value says which) */
} px_retrain_outcome;

/* px_retrain with the outcome spelled out (outcome may be NULL). The return value
 * is px_retrain's: 0 promoted, PX_ENOTHING kept, unchanged or gates failed, negative on error. */
int px_retrain_ex(PGconn *c, const px_config *cfg, const char *model, const px_retrain_params *p, FILE *report,
                  px_retrain_outcome *outcome, px_err *e);

#endif
