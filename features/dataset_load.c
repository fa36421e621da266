/* dataset_load.c: px_dataset_load, a table or view of the warehouse into a dense
 * px_dataset. Names are checked against pg_catalog and quoted with
 * PQescapeIdentifier; roles come from features.catalog for the built-in sets and
 * are inferred from the column types otherwise. Rows are read with one binary
 * COPY ... TO STDOUT (numbers as float8, so the server formats no text) in a
 * repeatable-read snapshot with the row count taken before it, ordered by (time,
 * key); categorical levels are collected in one pass and then sorted by byte order. Invariant: the dataset's arrays hold exactly the rows with
 * a label, in that order. */
#include "features/features.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct lcol {
    char *name;
    char type[64];     /* base type name: int4, numeric, bool, text, uuid, date ... */
    char cat;          /* pg_type.typcategory: N numeric, B boolean, S string, D date/time ... */
    int in_catalog;
    px_col_role role;
    px_col_kind kind;
} lcol;

/* distinct values of one categorical column: open addressing on FNV-1a */
typedef struct levelset {
    char **val;      /* by insertion index */
    size_t n, max;
    size_t *slot;    /* cap entries: insertion index + 1, 0 = empty */
    size_t cap;
} levelset;

typedef struct loader {
    PGconn *c;
    px_err *e;
    const px_dataset_params *p;
    char table[256];          /* schema.name as given back by pg_catalog */
    char *qtable;             /* quoted "schema"."name" */
    lcol *cols;
    int ncols;
    int label, time, group, key, sex, female, age; /* column indexes or -1 */
    int *feat;                /* feature column indexes, nfeat of them */
    size_t nfeat;
    int *extra;
    size_t nextra;
    levelset *lv;             /* p entries (used for categorical ones) */
    char def_hash[65];
    px_buf sql;               /* the COPY's FROM ... WHERE ... [ORDER BY ...] */
    px_feat_field *fld;       /* the COPY's fields, read by the feature reader */
    size_t nfld;
    unsigned char *wire;      /* per field: its px_feat_wire */
    int client_sort;          /* 1: rows come unordered and are sorted by (day, key) here */
    unsigned char *tnull;     /* n: time is NULL (sorted last, as ORDER BY does) */
    px_buf keys;              /* the rows' keys as byte strings that compare like the key */
    size_t *koff;             /* n + 1 offsets into keys */
} loader;


static int is_numeric_cat(char cat) { return cat == 'N' || cat == 'B'; }
static int is_text_cat(char cat) { return cat == 'S'; }
static int is_date(const lcol *c) { return strcmp(c->type, "date") == 0 || strcmp(c->type, "timestamp") == 0 || strcmp(c->type, "timestamptz") == 0; }

static int col_index(const loader *L, const char *name)
{
    for (int i = 0; i < L->ncols; i++)
        if (strcmp(L->cols[i].name, name) == 0) return i;
    return -1;
}

/* A failed query: PostgreSQL's message, detail and hint (px_db_fail) under ours. */
static int db_error(loader *L, const char *what, PGresult *r)
{
    char msg[512];
    snprintf(msg, sizeof msg, "cannot load '%s': %s", L->table[0] ? L->table : L->p->table, what);
    return px_db_fail(L->e, L->c, r, msg);
}

static int oom(loader *L) { return px_err_set(L->e, PX_ENOMEM, "out of memory loading '%s'", L->p->table); }

/* Appends the quoted identifier to L->sql. */
static int add_ident(loader *L, const char *name)
{
    char *q = PQescapeIdentifier(L->c, name, strlen(name));
    if (!q) return oom(L);
    int rc = px_buf_adds(&L->sql, q);
    PQfreemem(q);
    return rc ? oom(L) : 0;
}

/* ---- finding the table and its columns ---------------------------------------- */

/* The table and its columns from pg_catalog (the feature reader's lookup), with
 * roles inferred from the types; the catalog overrides them for the built-in sets. */
static int read_table(loader *L)
{
    px_feat_table *t = px_feat_table_open(L->c, L->p->table, L->e);
    if (!t) return L->e && L->e->code ? L->e->code : PX_EDB;
    int rc = 0;
    snprintf(L->table, sizeof L->table, "%s", px_feat_table_name(t));
    L->ncols = (int)px_feat_table_ncols(t);
    if (!(L->qtable = strdup(px_feat_table_quoted(t))) || !(L->cols = calloc((size_t)L->ncols + 1, sizeof *L->cols))) {
        L->ncols = 0;
        rc = oom(L);
        goto out;
    }
    for (int i = 0; i < L->ncols; i++) {
        lcol *c = &L->cols[i];
        const char *type;
        char cat;
        const char *name = px_feat_table_col(t, (size_t)i, &type, &cat);
        if (!(c->name = strdup(name))) {
            L->ncols = i;
            rc = oom(L);
            goto out;
        }
        snprintf(c->type, sizeof c->type, "%s", type);
        c->cat = cat;
        if (strcmp(c->type, "uuid") == 0) c->role = strcmp(c->name, "patient_id") == 0 ? PX_ROLE_GROUP : PX_ROLE_KEY;
        else if (is_date(c)) c->role = PX_ROLE_INFO; /* a time candidate */
        else if (is_numeric_cat(c->cat) || is_text_cat(c->cat)) c->role = PX_ROLE_FEATURE;
        else c->role = PX_ROLE_INFO;
        c->kind = is_text_cat(c->cat) ? PX_COL_CATEGORICAL : PX_COL_NUMERIC;
    }
out:
    px_feat_table_free(t);
    return rc;
}

static int parse_role(const char *s, px_col_role *role)
{
    static const char *const n[] = {"key", "group", "time", "feature", "label", "info"};
    for (int i = 0; i < 6; i++)
        if (strcmp(s, n[i]) == 0) {
            *role = (px_col_role)i;
            return 0;
        }
    return -1;
}

/* Roles and kinds from the latest catalog build of this table, when there is one. */
static int read_catalog(loader *L, int *found)
{
    *found = 0;
    PGresult *r = PQexec(L->c, "SELECT to_regclass('features.catalog') IS NOT NULL");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        int rc = db_error(L, "cannot look for features.catalog", r);
        PQclear(r);
        return rc;
    }
    int have = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!have) return 0;
    const char *pv[1] = {L->table};
    r = PQexecParams(L->c,
                     "SELECT b.definition_hash, c->>'name', c->>'role', c->>'kind'"
                     " FROM (SELECT * FROM features.catalog WHERE table_name = $1 ORDER BY build_id DESC LIMIT 1) b,"
                     " jsonb_array_elements(b.columns) c",
                     1, NULL, pv, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = db_error(L, "cannot read features.catalog", r);
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        *found = 1;
        snprintf(L->def_hash, sizeof L->def_hash, "%s", PQgetvalue(r, i, 0));
        int j = col_index(L, PQgetvalue(r, i, 1));
        px_col_role role;
        if (j < 0 || parse_role(PQgetvalue(r, i, 2), &role) != 0) continue; /* a column dropped since */
        L->cols[j].in_catalog = 1;
        L->cols[j].role = role;
        L->cols[j].kind = strcmp(PQgetvalue(r, i, 3), "categorical") == 0 ? PX_COL_CATEGORICAL : PX_COL_NUMERIC;
    }
out:
    PQclear(r);
    return rc;
}

static const char *role_word(px_col_role r)
{
    static const char *const n[] = {"key", "group", "time", "feature", "label", "info"};
    return n[r];
}

/* Decides label, time, group, key, features and extras. */
static int assign_roles(loader *L, int from_catalog)
{
    const px_dataset_params *p = L->p;
    L->label = col_index(L, p->label);
    if (L->label < 0) return px_err_set(L->e, PX_ENOTFOUND, "label '%s' is not in table '%s'", p->label, L->table);
    if (!is_numeric_cat(L->cols[L->label].cat))
        return px_err_set(L->e, PX_EINVAL, "label '%s' is not numeric (table '%s', type %s)", p->label, L->table,
                          L->cols[L->label].type);

    /* time: given, else the catalog's, else discharge_date, else admission_date */
    L->time = -1;
    if (p->time_col) {
        if ((L->time = col_index(L, p->time_col)) < 0)
            return px_err_set(L->e, PX_ENOTFOUND, "column '%s' is not in table '%s'", p->time_col, L->table);
        if (!is_date(&L->cols[L->time]))
            return px_err_set(L->e, PX_EINVAL, "time column '%s' of '%s' is not a date (type %s)", p->time_col, L->table,
                              L->cols[L->time].type);
    } else {
        for (int i = 0; i < L->ncols && from_catalog && L->time < 0; i++)
            if (L->cols[i].in_catalog && L->cols[i].role == PX_ROLE_TIME) L->time = i;
        const char *cand[] = {"discharge_date", "admission_date"};
        for (int k = 0; k < 2 && L->time < 0; k++) {
            int i = col_index(L, cand[k]);
            if (i >= 0 && is_date(&L->cols[i])) L->time = i;
        }
    }
    if (L->time == L->label) return px_err_set(L->e, PX_EINVAL, "'%s' cannot be both the label and the time", p->label);
    /* group: given, else patient_id */
    L->group = -1;
    if (p->group_col) {
        if ((L->group = col_index(L, p->group_col)) < 0)
            return px_err_set(L->e, PX_ENOTFOUND, "column '%s' is not in table '%s'", p->group_col, L->table);
    } else {
        L->group = col_index(L, "patient_id");
    }
    if (L->group >= 0 && (L->group == L->label || L->group == L->time))
        return px_err_set(L->e, PX_EINVAL, "group column '%s' of '%s' is also the label or the time",
                          L->cols[L->group].name, L->table);
    /* key: the catalog's, else encounter_id, else the first uuid that is not the group */
    L->key = -1;
    for (int i = 0; i < L->ncols && L->key < 0 && from_catalog; i++)
        if (L->cols[i].in_catalog && L->cols[i].role == PX_ROLE_KEY && i != L->group && i != L->label) L->key = i;
    if (L->key < 0) {
        int i = col_index(L, "encounter_id");
        if (i >= 0 && i != L->group && i != L->label) L->key = i;
    }
    for (int i = 0; i < L->ncols && L->key < 0; i++)
        if (strcmp(L->cols[i].type, "uuid") == 0 && i != L->group && i != L->label) L->key = i;

    /* final roles of the chosen columns; other date columns are not the time */
    for (int i = 0; i < L->ncols; i++)
        if (L->cols[i].role == PX_ROLE_TIME) L->cols[i].role = PX_ROLE_INFO;
    if (L->key >= 0) L->cols[L->key].role = PX_ROLE_KEY;
    if (L->group >= 0) L->cols[L->group].role = PX_ROLE_GROUP;
    if (L->time >= 0) L->cols[L->time].role = PX_ROLE_TIME;
    L->cols[L->label].role = PX_ROLE_LABEL;

    /* features */
    size_t want = 0;
    if (p->features) {
        while (p->features[want]) want++;
    } else {
        for (int i = 0; i < L->ncols; i++) want += L->cols[i].role == PX_ROLE_FEATURE;
    }
    if (!(L->feat = calloc(want + 1, sizeof *L->feat))) return oom(L);
    if (p->features) {
        for (size_t k = 0; k < want; k++) {
            const char *f = p->features[k];
            int i = col_index(L, f);
            if (i < 0) return px_err_set(L->e, PX_ENOTFOUND, "column '%s' is not in table '%s'", f, L->table);
            lcol *c = &L->cols[i];
            if (c->role == PX_ROLE_KEY || c->role == PX_ROLE_GROUP || c->role == PX_ROLE_TIME || c->role == PX_ROLE_LABEL)
                return px_err_set(L->e, PX_EINVAL, "column '%s' is the %s of '%s' and cannot be a feature", f,
                                  role_word(c->role), L->table);
            if (!is_numeric_cat(c->cat) && !is_text_cat(c->cat))
                return px_err_set(L->e, PX_EINVAL, "column '%s' of '%s' has type %s: a feature must be numeric, boolean or text",
                                  f, L->table, c->type);
            for (size_t q = 0; q < k; q++)
                if (L->feat[q] == i) return px_err_set(L->e, PX_EINVAL, "feature '%s' is listed twice", f);
            if (!c->in_catalog) c->kind = is_text_cat(c->cat) ? PX_COL_CATEGORICAL : PX_COL_NUMERIC;
            else if (c->kind == PX_COL_NUMERIC && !is_numeric_cat(c->cat)) c->kind = PX_COL_CATEGORICAL;
            L->feat[k] = i;
        }
    } else {
        size_t k = 0;
        for (int i = 0; i < L->ncols; i++)
            if (L->cols[i].role == PX_ROLE_FEATURE) {
                if (L->cols[i].kind == PX_COL_NUMERIC && !is_numeric_cat(L->cols[i].cat))
                    L->cols[i].kind = PX_COL_CATEGORICAL;
                L->feat[k++] = i;
            }
    }
    L->nfeat = want;

    /* extras, and the columns behind sex and age */
    L->nextra = 0;
    if (p->extra) {
        while (p->extra[L->nextra]) L->nextra++;
        if (!(L->extra = calloc(L->nextra + 1, sizeof *L->extra))) return oom(L);
        for (size_t k = 0; k < L->nextra; k++)
            if ((L->extra[k] = col_index(L, p->extra[k])) < 0)
                return px_err_set(L->e, PX_ENOTFOUND, "column '%s' is not in table '%s'", p->extra[k], L->table);
    }
    L->sex = col_index(L, "sex");
    L->female = L->sex < 0 ? col_index(L, "female") : -1;
    if (L->female >= 0 && !is_numeric_cat(L->cols[L->female].cat)) L->female = -1;
    L->age = col_index(L, "age_years");
    if (L->age < 0) L->age = col_index(L, "age");
    if (L->age >= 0 && !is_numeric_cat(L->cols[L->age].cat)) L->age = -1;
    return 0;
}

/* ---- the query ---------------------------------------------------------------- */

/* Appends one field of the COPY (its SQL and wire type) to L->fld. */
static int push_field(loader *L, const char *sql, px_feat_wire wire)
{
    if (px_feat_field_set(&L->fld[L->nfld], sql, wire, L->e) != 0) return oom(L);
    L->wire[L->nfld++] = (unsigned char)wire;
    return 0;
}

/* A column as the COPY sends it: text for categorical columns, native binary
 * for integer, real and boolean columns, float8 for other numbers (numeric):
 * the feature reader's rule (px_feat_wire_of). prefix/suffix wrap the quoted
 * identifier; wire < 0 means by the column's type. */
static int add_col(loader *L, int i, int as_text, const char *prefix, const char *suffix, int wire)
{
    const lcol *c = &L->cols[i];
    const char *cast = "";
    px_feat_wire w = wire >= 0 ? (px_feat_wire)wire : px_feat_wire_of(c->type, as_text, &cast);
    char *q = PQescapeIdentifier(L->c, c->name, strlen(c->name));
    if (!q) return oom(L);
    px_buf b = {0};
    int rc = px_buf_printf(&b, "%s(%s)%s%s", prefix, q, cast, suffix) ? oom(L) : push_field(L, b.data, w);
    PQfreemem(q);
    px_buf_release(&b);
    return rc;
}

/* The COPY: features, label, day, group, sex, age, extras and (when there is a key)
 * the key. With a key the rows are sorted here, by (day, key), which saves the
 * server a sort of the whole table; without one the server orders by every value
 * loaded (text as bytes), so that the same table always gives the same order. */
static int build_copy(loader *L)
{
    size_t nf = L->nfeat + 6 + L->nextra;
    if (!(L->wire = calloc(nf, 1)) || !(L->fld = calloc(nf, sizeof *L->fld))) return oom(L);
    L->nfld = 0;
    int rc = 0;
    for (size_t k = 0; k < L->nfeat && rc == 0; k++) {
        int i = L->feat[k];
        rc = add_col(L, i, L->cols[i].kind == PX_COL_CATEGORICAL, "", "", -1);
    }
    if (rc == 0) rc = add_col(L, L->label, 0, "", "", -1);
    if (rc == 0)
        rc = L->time >= 0 ? add_col(L, L->time, 0, "(", "::date - DATE '1970-01-01')", PX_WIRE_I4)
                          : push_field(L, "NULL::integer", PX_WIRE_I4);
    int want[3] = {L->group, L->sex >= 0 ? L->sex : L->female, L->age};
    int text[3] = {1, L->sex >= 0, 0};
    for (int k = 0; k < 3 && rc == 0; k++)
        rc = want[k] >= 0 ? add_col(L, want[k], text[k], "", "", -1) : push_field(L, "NULL::text", PX_WIRE_TEXT);
    for (size_t k = 0; k < L->nextra && rc == 0; k++) rc = add_col(L, L->extra[k], 1, "", "", -1);
    L->client_sort = L->key >= 0;
    if (rc == 0 && L->client_sort) {
        const lcol *k = &L->cols[L->key];
        int integer = strcmp(k->type, "int2") == 0 || strcmp(k->type, "int4") == 0 || strcmp(k->type, "int8") == 0;
        rc = strcmp(k->type, "uuid") == 0 ? add_col(L, L->key, 0, "", "", PX_WIRE_UUID)
             : integer                   ? add_col(L, L->key, 0, "", "::int8", PX_WIRE_I8)
                                         : add_col(L, L->key, 0, "", "::text", PX_WIRE_TEXT);
    }
    px_buf *b = &L->sql;
    if (rc == 0) rc = px_buf_printf(b, "FROM %s WHERE ", L->qtable) ? oom(L) : 0;
    if (rc == 0) rc = add_ident(L, L->cols[L->label].name);
    if (rc == 0) rc = px_buf_adds(b, " IS NOT NULL") ? oom(L) : 0;
    if (rc == 0 && !L->client_sort) {
        rc = px_buf_adds(b, " ORDER BY ") ? oom(L) : 0;
        if (rc == 0 && L->time >= 0) {
            rc = add_ident(L, L->cols[L->time].name);
            if (rc == 0) rc = px_buf_adds(b, ", ") ? oom(L) : 0;
        }
        for (size_t k = 0; k <= L->nfeat && rc == 0; k++) {
            int i = k < L->nfeat ? L->feat[k] : L->label;
            if (k) rc = px_buf_adds(b, ", ") ? oom(L) : 0;
            if (rc == 0) rc = add_ident(L, L->cols[i].name);
            if (rc == 0 && is_text_cat(L->cols[i].cat)) rc = px_buf_adds(b, " COLLATE \"C\"") ? oom(L) : 0;
        }
    }
    return rc;
}

/* ---- categorical levels ------------------------------------------------------------ */

/* Index of v in the set (inserted if new), or -1 when the set is full / out of memory. */
static long level_index(levelset *ls, const char *v, int *full)
{
    if (!ls->slot) {
        ls->cap = 16;
        while (ls->cap < 2 * ls->max + 2) ls->cap *= 2;
        if (!(ls->slot = calloc(ls->cap, sizeof *ls->slot)) || !(ls->val = calloc(ls->max + 1, sizeof *ls->val)))
            return -1;
    }
    size_t h = (size_t)px_hash_str(v) & (ls->cap - 1);
    while (ls->slot[h]) {
        size_t k = ls->slot[h] - 1;
        if (strcmp(ls->val[k], v) == 0) return (long)k;
        h = (h + 1) & (ls->cap - 1);
    }
    if (ls->n >= ls->max) {
        *full = 1;
        return -1;
    }
    if (!(ls->val[ls->n] = strdup(v))) return -1;
    ls->slot[h] = ++ls->n;
    return (long)(ls->n - 1);
}

static uint64_t group_key(const char *s)
{
    /* a uuid pseudonym: its first 64 bits; anything else: the first 64 bits of its SHA-256 */
    uint64_t v = 0;
    int digits = 0;
    for (const char *q = s; *q && digits < 16; q++) {
        int d = (*q >= '0' && *q <= '9') ? *q - '0' : (*q >= 'a' && *q <= 'f') ? *q - 'a' + 10 : (*q == '-') ? -2 : -1;
        if (d == -2) continue;
        if (d < 0) {
            digits = -1;
            break;
        }
        v = v << 4 | (uint64_t)d;
        digits++;
    }
    if (digits == 16) return v;
    char hex[65];
    px_sha256_hex(s, strlen(s), hex);
    v = 0;
    for (int i = 0; i < 16; i++) v = v << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
    return v;
}

/* One field of a binary COPY tuple: data and length, or len -1 for NULL. */
/* Stores one row of the reader as row i of d. */
static int store_row(loader *L, px_dataset *d, size_t i, const px_feat_row *r)
{
    for (size_t j = 0; j < L->nfeat; j++) {
        if (r->len[j] < 0) continue; /* NAN */
        double *x = &d->x[i * L->nfeat + j];
        if (d->kind[j] == PX_COL_NUMERIC) {
            *x = r->num[j];
            continue;
        }
        int full = 0;
        long li = level_index(&L->lv[j], r->text[j], &full);
        if (li < 0 && full)
            return px_err_set(L->e, PX_EINVAL, "column '%s' of '%s' has more than %zu distinct values", d->names[j],
                              L->table, L->lv[j].max);
        if (li < 0) return oom(L);
        *x = (double)li;
    }
    size_t g = L->nfeat;   /* label, day, group, sex, age, extras, key */
    if (r->len[g] < 0) return px_err_set(L->e, PX_EDB, "cannot load '%s': bad label", L->table);
    d->y[i] = r->num[g];
    if (r->len[g + 1] == 4) d->day[i] = (int32_t)r->num[g + 1];
    else L->tnull[i] = 1;
    if (r->text[g + 2]) d->group[i] = group_key(r->text[g + 2]);
    if (r->len[g + 3] > 0 && r->text[g + 3]) {
        char s0 = r->text[g + 3][0];
        if (s0 >= 'a' && s0 <= 'z') s0 = (char)(s0 - 32);
        d->sex[i] = (s0 == 'F' || s0 == 'M' || s0 == 'U') ? s0 : 0;
    } else if (r->len[g + 3] > 0) {
        double fv = r->num[g + 3];
        d->sex[i] = fv == 1.0 ? 'F' : fv == 0.0 ? 'M' : 0;
    }
    if (r->len[g + 4] > 0) d->age[i] = r->num[g + 4];
    for (size_t k = 0; k < L->nextra; k++) {
        const char *v = r->text[g + 5 + k];
        if (v && !(d->extra[i * L->nextra + k] = strdup(v))) return oom(L);
    }
    if (L->client_sort) {
        /* the key as bytes that memcmp orders like PostgreSQL: a first byte 0 (1 for
         * NULL, last), then a uuid as its 16 bytes, an integer big-endian with the sign
         * bit flipped, text as it is (byte order) */
        size_t kf = g + 5 + L->nextra;
        int32_t klen = r->len[kf];
        const unsigned char *kp = r->raw[kf];
        int rc = px_buf_addc(&L->keys, klen < 0 ? 1 : 0);
        if (rc == 0 && klen == 8 && L->wire[L->nfld - 1] == PX_WIRE_I8) {
            unsigned char be[8];
            memcpy(be, kp, 8);
            be[0] ^= 0x80;
            rc = px_buf_add(&L->keys, be, 8);
        } else if (rc == 0 && klen > 0) {
            rc = px_buf_add(&L->keys, kp, (size_t)klen);
        }
        if (rc != 0) return oom(L);
        L->koff[i + 1] = L->keys.len;
    }
    return 0;
}

/* -1, 0, 1 as row a sorts before, with or after row b: (time, NULL last; key) */
static int row_cmp(const loader *L, const px_dataset *d, size_t a, size_t b)
{
    if (L->tnull[a] != L->tnull[b]) return L->tnull[a] ? 1 : -1;
    if (d->day[a] != d->day[b]) return d->day[a] < d->day[b] ? -1 : 1;
    size_t la = L->koff[a + 1] - L->koff[a], lb = L->koff[b + 1] - L->koff[b];
    int c = memcmp(L->keys.data + L->koff[a], L->keys.data + L->koff[b], la < lb ? la : lb);
    if (c) return c < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb ? 1 : 0;
}

/* Stable merge sort of idx[0..n) (ties keep the order the rows came in). */
static void merge_sort(const loader *L, const px_dataset *d, size_t *idx, size_t *tmp, size_t n)
{
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = row_cmp(L, d, idx[j], idx[i]) < 0 ? idx[j++] : idx[i++];
            while (i < mid) tmp[k++] = idx[i++];
            while (j < hi) tmp[k++] = idx[j++];
        }
        memcpy(idx, tmp, n * sizeof *idx);
    }
}

/* Rearranges n elements of `size` bytes so that element k becomes old element
 * idx[k], in place (following the permutation's cycles with one spare element). */
static void permute(void *base, size_t size, size_t n, const size_t *idx, unsigned char *seen, void *spare)
{
    if (size == 0) return;
    char *b = base;
    memset(seen, 0, n);
    for (size_t k = 0; k < n; k++) {
        if (seen[k] || idx[k] == k) continue;
        memcpy(spare, b + k * size, size);
        size_t j = k;
        while (idx[j] != k) {
            memcpy(b + j * size, b + idx[j] * size, size);
            seen[j] = 1;
            j = idx[j];
        }
        memcpy(b + j * size, spare, size);
        seen[j] = 1;
    }
}

/* Puts the rows of d into (time, key) order. */
static int sort_rows(loader *L, px_dataset *d)
{
    size_t n = d->n;
    if (n < 2) return 0;
    size_t *idx = malloc(n * sizeof *idx), *tmp = malloc(n * sizeof *tmp);
    unsigned char *seen = malloc(n);
    size_t row = d->p * sizeof *d->x, ex = d->nextra * sizeof *d->extra;
    void *spare = malloc((row > ex ? row : ex) + sizeof(double));
    int rc = 0;
    if (!idx || !tmp || !seen || !spare) {
        rc = oom(L);
        goto out;
    }
    for (size_t i = 0; i < n; i++) idx[i] = i;
    merge_sort(L, d, idx, tmp, n);
    permute(d->x, row, n, idx, seen, spare);
    permute(d->y, sizeof *d->y, n, idx, seen, spare);
    permute(d->day, sizeof *d->day, n, idx, seen, spare);
    permute(d->group, sizeof *d->group, n, idx, seen, spare);
    permute(d->sex, 1, n, idx, seen, spare);
    permute(d->age, sizeof *d->age, n, idx, seen, spare);
    if (d->nextra) permute(d->extra, ex, n, idx, seen, spare);
out:
    free(idx);
    free(tmp);
    free(seen);
    free(spare);
    return rc;
}

typedef struct load_scan {
    loader *L;
    px_dataset *d;
    size_t i;
} load_scan;

static int load_row(const px_feat_row *r, void *arg, px_err *e)
{
    load_scan *s = arg;
    (void)e;
    if (s->i >= s->d->n) return px_err_set(s->L->e, PX_ESTATE, "table '%s' changed while it was being loaded", s->L->table);
    int rc = store_row(s->L, s->d, s->i, r);
    s->i++;
    return rc;
}

/* Reads the rows into d (n rows expected) through the feature reader. */
static int read_rows(loader *L, px_dataset *d)
{
    load_scan s = {L, d, 0};
    int rc = px_feat_scan(L->c, L->fld, L->nfld, L->sql.data, load_row, &s, L->e);
    if (rc == PX_EDB && !L->e->detail[0]) px_err_wrap(L->e, PX_EDB, "cannot load '%s'", L->table);
    if (rc == 0 && s.i != d->n) rc = px_err_set(L->e, PX_ESTATE, "table '%s' changed while it was being loaded", L->table);
    return rc;
}

/* Moves each categorical column's levels into byte order and renumbers x. */
typedef struct level_ref { char *s; size_t old; } level_ref;

static int cmp_level(const void *a, const void *b)
{
    return strcmp(((const level_ref *)a)->s, ((const level_ref *)b)->s);
}

static int sort_levels(loader *L, px_dataset *d)
{
    for (size_t j = 0; j < d->p; j++) {
        if (d->kind[j] != PX_COL_CATEGORICAL) continue;
        levelset *ls = &L->lv[j];
        size_t n = ls->n;
        level_ref *ref = calloc(n ? n : 1, sizeof *ref);
        size_t *newidx = calloc(n ? n : 1, sizeof *newidx);
        char **sorted = calloc(n ? n : 1, sizeof *sorted);
        if (!ref || !newidx || !sorted) {
            free(ref);
            free(newidx);
            free(sorted);
            return oom(L);
        }
        for (size_t k = 0; k < n; k++) ref[k] = (level_ref){ls->val[k], k};
        qsort(ref, n, sizeof *ref, cmp_level);
        for (size_t k = 0; k < n; k++) {
            sorted[k] = ref[k].s;
            newidx[ref[k].old] = k;
        }
        for (size_t i = 0; i < d->n; i++) {
            double *x = &d->x[i * d->p + j];
            if (!isnan(*x)) *x = (double)newidx[(size_t)*x];
        }
        d->levels[j] = sorted;
        d->nlevels[j] = n;
        free(ls->val); /* the strings now belong to d->levels[j] */
        ls->val = NULL;
        ls->n = 0;
        free(ref);
        free(newidx);
    }
    return 0;
}

static void loader_release(loader *L)
{
    for (int i = 0; i < L->ncols; i++) free(L->cols[i].name);
    free(L->cols);
    free(L->qtable);
    free(L->feat);
    free(L->extra);
    if (L->lv) {
        for (size_t j = 0; j < L->nfeat; j++) {
            for (size_t k = 0; k < L->lv[j].n; k++) free(L->lv[j].val[k]);
            free(L->lv[j].val);
            free(L->lv[j].slot);
        }
        free(L->lv);
    }
    px_buf_release(&L->sql);
    px_buf_release(&L->keys);
    px_feat_fields_release(L->fld, L->nfld);
    free(L->fld);
    free(L->wire);
    free(L->tnull);
    free(L->koff);
}

static int count_rows(loader *L, size_t *n, size_t *dropped)
{
    px_buf_release(&L->sql);
    int rc = px_buf_adds(&L->sql, "SELECT count(*) FILTER (WHERE ");
    if (rc == 0) rc = add_ident(L, L->cols[L->label].name);
    if (rc == 0) rc = px_buf_adds(&L->sql, " IS NOT NULL), count(*) FILTER (WHERE ");
    if (rc == 0) rc = add_ident(L, L->cols[L->label].name);
    if (rc == 0) rc = px_buf_printf(&L->sql, " IS NULL) FROM %s", L->qtable);
    if (rc == 0) rc = px_buf_addc(&L->sql, '\0');
    if (rc != 0) return oom(L);
    PGresult *r = PQexec(L->c, L->sql.data);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = db_error(L, "cannot count the rows", r);
    } else {
        *n = (size_t)strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        *dropped = (size_t)strtoull(PQgetvalue(r, 0, 1), NULL, 10);
    }
    PQclear(r);
    px_buf_release(&L->sql);
    return rc;
}

px_dataset *px_dataset_load(PGconn *c, const px_dataset_params *p, px_err *e)
{
    loader L;
    memset(&L, 0, sizeof L);
    L.c = c;
    L.e = e;
    L.p = NULL;
    px_dataset *d = NULL;
    int rc = 0, own_tx = 0, from_catalog = 0;
    if (!p || !p->table || !p->table[0] || !p->label || !p->label[0]) {
        px_err_set(e, PX_EINVAL, "loading a dataset needs a table and a label");
        return NULL;
    }
    L.p = p;
    /* one snapshot for the count, the levels and the rows */
    if (PQtransactionStatus(c) == PQTRANS_IDLE) {
        if ((rc = px_db_exec(c, e, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")) != 0) goto out;
        own_tx = 1;
    }
    if ((rc = read_table(&L)) != 0) goto out;
    if ((rc = read_catalog(&L, &from_catalog)) != 0) goto out;
    if ((rc = assign_roles(&L, from_catalog)) != 0) goto out;
    size_t n = 0, dropped = 0;
    if ((rc = count_rows(&L, &n, &dropped)) != 0) goto out;
    if ((rc = build_copy(&L)) != 0) goto out;
    if (!(d = px_dataset_new(n, L.nfeat))) {
        rc = oom(&L);
        goto out;
    }
    if (L.nextra && !(d->extra = calloc(n * L.nextra + 1, sizeof *d->extra))) {
        rc = oom(&L);
        goto out;
    }
    d->nextra = L.nextra;
    if (L.nextra && !(d->extra_names = calloc(L.nextra, sizeof *d->extra_names))) {
        rc = oom(&L);
        goto out;
    }
    for (size_t k = 0; k < L.nextra; k++)
        if (!(d->extra_names[k] = strdup(L.cols[L.extra[k]].name))) {
            rc = oom(&L);
            goto out;
        }
    if (!(L.lv = calloc(L.nfeat + 1, sizeof *L.lv))) {
        rc = oom(&L);
        goto out;
    }
    for (size_t j = 0; j < L.nfeat; j++) {
        if (!(d->names[j] = strdup(L.cols[L.feat[j]].name))) {
            rc = oom(&L);
            goto out;
        }
        d->kind[j] = L.cols[L.feat[j]].kind;
        L.lv[j].max = p->max_levels ? p->max_levels : 200;
    }
    if (!(L.tnull = calloc(n + 1, 1)) || !(L.koff = calloc(n + 1, sizeof *L.koff))) {
        rc = oom(&L);
        goto out;
    }
    if ((rc = read_rows(&L, d)) != 0) goto out;
    if (L.client_sort && (rc = sort_rows(&L, d)) != 0) goto out;
    if ((rc = sort_levels(&L, d)) != 0) goto out;
    d->dropped_missing_label = dropped;
    snprintf(d->table, sizeof d->table, "%s", L.table);
    snprintf(d->label, sizeof d->label, "%s", L.cols[L.label].name);
    snprintf(d->time_col, sizeof d->time_col, "%s", L.time >= 0 ? L.cols[L.time].name : "");
    snprintf(d->definition_hash, sizeof d->definition_hash, "%s", from_catalog ? L.def_hash : "");
    px_dataset_fingerprint(d);
out:
    if (own_tx) px_db_exec(c, NULL, rc == 0 ? "COMMIT" : "ROLLBACK");
    loader_release(&L);
    if (rc != 0) {
        px_dataset_free(d);
        return NULL;
    }
    return d;
}
