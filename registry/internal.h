/* internal.h: shared inside registry/ only (no other folder includes it).
 * Key handling and signatures (keys.c), the artifact directory: writing,
 * and verified reading through a signed manifest (artifact.c), and small helpers.
 * Invariant: no artifact byte is parsed before the manifest's signature and the
 * file's size and SHA-256 have been checked. */
#ifndef PROGNOS_REGISTRY_INTERNAL_H
#define PROGNOS_REGISTRY_INTERNAL_H

#include "registry/registry.h"
#include <cjson/cJSON.h>

#define REG_SIG_BYTES 64              /* Ed25519 signature */
#define REG_MANIFEST_MAX (16u << 20)  /* manifest.json size limit */
#define REG_FILE_MAX ((size_t)4 << 30) /* any artifact file (an SVM's model.bin can be large) */
#define REG_MANIFEST_FORMAT "prognos-manifest 1"

/* ---- keys.c ------------------------------------------------------------ */

/* Private key: PROGNOS_SIGNING_KEY or $PROGNOS_HOME/signing.key; public key:
 * always $PROGNOS_HOME/signing.pub. Returns 0 or PX_EINVAL (path too long). */
int reg_key_paths(const px_config *cfg, char *priv, size_t privlen, char *pub, size_t publen, px_err *e);
/* Signs data with the private key in PEM file path (Ed25519, deterministic).
 * Returns 0 or PX_EIO / PX_ESTATE (key missing, unreadable, wrong type). */
int reg_sign(const char *priv_path, const void *data, size_t len, unsigned char sig[REG_SIG_BYTES], px_err *e);
/* 0 when sig is a valid signature of data under the public key in pub_path;
 * PX_ECORRUPT on mismatch; PX_EIO / PX_ESTATE when the key cannot be used. */
int reg_verify_sig(const char *pub_path, const void *data, size_t len, const unsigned char *sig, size_t siglen,
                   px_err *e);
/* Standard base64 with padding; out must hold 4*ceil(n/3)+1 bytes. */
void reg_b64_encode(const unsigned char *in, size_t n, char *out);
/* Strict decoding (padding required, no whitespace); returns bytes written or -1. */
long reg_b64_decode(const char *in, size_t n, unsigned char *out, size_t outcap);

/* ---- artifact.c ---------------------------------------------------------- */

typedef struct reg_file {
    const char *name;           /* "model.bin", ... : [a-z0-9_.-]+, not manifest.* */
    const unsigned char *data;
    size_t len;
} reg_file;

/* A manifest whose signature checked out: its exact bytes and their parse. */
typedef struct reg_manifest {
    unsigned char *bytes;
    size_t len;
    cJSON *json;
    char name[64];
    int version;
    char ctx[192];              /* error prefix, e.g. "cannot load model 'readmission' v3" */
} reg_manifest;

/* $PROGNOS_HOME/registry/<name>/<version> (version 0: the model's directory). */
int reg_dir(const px_config *cfg, const char *name, int version, char *out, size_t outlen, px_err *e);
/* 1 when name matches ^[a-z][a-z0-9_]{0,62}$. */
int reg_valid_name(const char *name);

/* Writes files plus manifest.json and manifest.sig into tmpdir (created; must not
 * exist), fsyncs it and renames it to dir. manifest is the manifest without its
 * "files" object, which this adds (file name -> sha256, bytes, in name order).
 * *manifest_sha receives the digest of manifest.json. On failure tmpdir is removed. */
int reg_write_dir(const char *tmpdir, const char *dir, cJSON *manifest, const reg_file *files, size_t nfiles,
                  const char *priv_path, char manifest_sha[65], px_err *e);
/* Removes a flat directory and the files in it; 0 or PX_EIO. Missing is fine. */
int reg_rmdir(const char *dir, px_err *e);

/* Reads dir/manifest.json and manifest.sig, checks the signature with pub_path,
 * then parses the manifest. expect_name NULL / expect_version 0: take the
 * manifest's (px_reg_load_dir), else they must match. verb starts every error
 * message ("cannot load" -> "cannot load model 'x' v3: model.bin: ...").
 * Returns 0 or PX_ECORRUPT (message names the model, version and file). */
int reg_manifest_open(const char *dir, const char *pub_path, const char *expect_name, int expect_version,
                      const char *verb, reg_manifest *m, px_err *e);
void reg_manifest_release(reg_manifest *m);
/* The part of reg_manifest_open after the signature check (exported for
 * tests/fuzz): parses m->bytes into m->json, checks the format, name, version
 * and file entries. 0 or PX_ECORRUPT; release m either way. */
int reg_manifest_parse(reg_manifest *m, const char *expect_name, int expect_version, const char *verb, px_err *e);
/* Verified read of one listed file: size and SHA-256 must match the manifest.
 * Caller frees *data. PX_ENOTFOUND when the manifest does not list it,
 * PX_ECORRUPT when it is missing, truncated, grown or altered. */
int reg_manifest_read(const reg_manifest *m, const char *dir, const char *file, unsigned char **data, size_t *len,
                      px_err *e);
/* Checks every listed file except skip (NULL: none; the caller reads that one
 * itself), and that the directory holds nothing else. */
int reg_manifest_check_all(const reg_manifest *m, const char *dir, const char *skip, px_err *e);

/* ---- small helpers ------------------------------------------------------- */

typedef struct pg_result PGresult;
/* Per-model lock for the current transaction (registrations, promotions). */
int reg_lock_name(PGconn *c, const char *name, px_err *e);
/* Opens a registered version's manifest (signature checked, digest equal to the
 * row's) and fills dir. Release m with reg_manifest_release. */
int reg_open_version(PGconn *c, const px_config *cfg, const char *name, int version, const char *verb, char *dir,
                     size_t dirlen, reg_manifest *m, px_err *e);
/* The version row's digests; PX_ENOTFOUND when there is no such version. */
int reg_row_digests(PGconn *c, const char *name, int version, char manifest_sha[65], char model_sha[65], px_err *e);

/* A JSON object/array text, parsed; NULL text gives dflt ("{}" or "[]").
 * Returns NULL and sets e when it does not parse or has the wrong type. */
cJSON *reg_json_parse(const char *text, const char *dflt, int want_array, const char *what, px_err *e);
/* cJSON_Print (formatted) plus a trailing newline; caller frees. NULL on ENOMEM. */
char *reg_json_print(const cJSON *j);


/* ---- hier.c: the hierarchical model stored with a GLM version ----------- */

/* {"facility_id", NULL} when table (schema.table) has that column, else NULL:
 * the dataset's extra columns to load for the hierarchical fit. */
const char *const *reg_hier_unit_columns(PGconn *c, const char *table);
/* The first version of name with the same training data (fingerprint), algorithm,
 * parameters (JSON, compared as jsonb) and feature definitions: *version, or 0. */
int reg_find_same(PGconn *c, const char *name, const char *fingerprint, const char *algo, const char *params_json,
                  const char *definition_hash, int *version, px_err *e);
/* Fits px_hier on every row of d (facility_id among d's extra columns) with m's
 * encoding; returns hierarchical.json (caller frees), or NULL with why set (not
 * a GLM, no facility column, a failed fit). why always receives a one-line summary. */
char *reg_hier_fit_json(const px_model *m, const px_dataset *d, const px_hier_params *hp, char *why, size_t whylen);

#endif
