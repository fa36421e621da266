/* gen_csv.c: the canonical CSV rows of the generator: fake identifiers from keyed
 * permutations (unique without a lookup), one emitter per canonical column matched
 * by name, and a patient's rows with the diagnoses and procedures of its stays. */
#include "engine/gen_internal.h"
#include <limits.h>

/* ---- identifiers: affine permutations make them unique without a lookup ---- */

/* A keyed bijection on 0..mod-1: an invertible mix on the next power of two
 * (add, odd multiply, xorshift), cycle-walked until it lands below mod. The
 * walk ends because i's own cycle holds i < mod; i >= mod wraps (repeats). */
static uint64_t perm(uint64_t i, uint64_t key, uint64_t mod)
{
    int bits = 1;
    while ((1ull << bits) < mod) bits++;
    uint64_t mask = (1ull << bits) - 1, x = i % mod;
    int h = bits / 2;
    do {
        x = (x + key) & mask;
        x = (x * 0x9E3779B97F4A7C15ull) & mask;
        x ^= x >> h;
        x = (x * 0xBF58476D1CE4E5B9ull) & mask;
        x ^= x >> h;
    } while (x >= mod);
    return x;
}

#define SSN_SPACE (898ull * 99ull * 9999ull)  /* areas 001-899 but 666, groups 01-99, serials */

void gen_npi_make(uint64_t idx, char npi[11])
{
    uint64_t body = 100000000ull + perm(idx, 0x4E5049ull, 100000000ull);
    int sum = 24, dbl = 1;  /* 24: the Luhn sum of the NPI prefix 80840 */
    for (int i = 8; i >= 0; i--) {
        int d = (int)(body % 10);
        body /= 10;
        npi[i] = (char)('0' + d);
        if (dbl) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
        dbl = !dbl;
    }
    npi[9] = (char)('0' + (10 - sum % 10) % 10);
    npi[10] = '\0';
}

/* ---- CSV fields: one emitter per canonical column, matched by name ---- */

#define EMIT(fn) static void fn(gen_out *o, const rowctx *c)
EMIT(f_fac_id) { put_s(o, c->g->fac[c->fac].id); }
EMIT(f_fac_name) { put_s(o, c->g->fac[c->fac].name); }
EMIT(f_fac_type) { put_s(o, c->g->fac[c->fac].critical_access ? "critical_access" : "acute"); }
EMIT(f_fac_state) { put_s(o, gen_states[c->g->fac[c->fac].state].code); }
EMIT(f_fac_beds) { gen_put_i(o, c->g->fac[c->fac].beds); }
EMIT(f_prov_id) { put_s(o, c->g->prov[c->prov].npi); }
EMIT(f_prov_name)
{
    put_s(o, gen_first_name(c->g->prov[c->prov].first));
    put_c(o, ' ');
    put_s(o, gen_last_names[c->g->prov[c->prov].last]);
}
EMIT(f_prov_specialty) { put_s(o, gen_slot_specialty[c->g->prov[c->prov].slot]); }
EMIT(f_pt_id)
{
    put_c(o, 'P');
    gen_put_u(o, (uint64_t)c->pt->idx + 1, 8);
}
EMIT(f_pt_mrn)
{
    put_s(o, "MRN");
    gen_put_u(o, perm((uint64_t)c->pt->idx, 0x4D524Eull, 1000000000ull), 9);
}
EMIT(f_pt_ssn)
{
    uint64_t x = perm((uint64_t)c->pt->idx, 0x53534Eull, SSN_SPACE);
    uint64_t area = x / (99ull * 9999ull) + 1, group = x / 9999ull % 99ull + 1, serial = x % 9999ull + 1;
    gen_put_u(o, area + (area >= 666), 3);
    put_c(o, '-');
    gen_put_u(o, group, 2);
    put_c(o, '-');
    gen_put_u(o, serial, 4);
}
EMIT(f_pt_first) { put_s(o, gen_first_name(c->pt->first)); }
EMIT(f_pt_last) { put_s(o, gen_last_names[c->pt->last]); }
EMIT(f_pt_birth) { gen_put_date(o, c->pt->birth); }
EMIT(f_pt_sex) { put_c(o, c->pt->female ? 'F' : 'M'); }
EMIT(f_pt_zip)
{
    put_s(o, gen_states[c->pt->zip_state].zip3);
    gen_put_u(o, (uint64_t)c->pt->zip_tail, 2);
}
EMIT(f_pt_phone)
{
    uint64_t body = 2000000ull + perm((uint64_t)c->pt->idx, 0x50484Full, 8000000ull);
    put_s(o, gen_states[c->pt->zip_state].area);
    put_c(o, '-');
    gen_put_u(o, body / 10000, 3);
    put_c(o, '-');
    gen_put_u(o, body % 10000, 4);
}
static void put_lower(gen_out *o, const char *s)
{
    for (; *s; s++) put_c(o, (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s));
}
EMIT(f_pt_email)
{
    static const char *const domain[] = {"@example.com", "@example.org", "@example.net"};
    put_lower(o, gen_first_name(c->pt->first));
    put_c(o, '.');
    put_lower(o, gen_last_names[c->pt->last]);
    gen_put_u(o, perm((uint64_t)c->pt->idx, 0x454D41ull, 1000000000ull), 1);
    put_s(o, domain[c->pt->idx % 3]);
}
EMIT(f_pt_death)
{
    if (c->pt->death != INT_MIN) gen_put_date(o, c->pt->death);
}
EMIT(f_enc_id)
{
    put_c(o, 'E');
    gen_put_u(o, (uint64_t)c->enc, 9);
}
EMIT(f_enc_fac) { put_s(o, c->g->fac[c->st->fac].id); }
EMIT(f_enc_attending) { put_s(o, c->g->prov[c->st->prov].npi); }
EMIT(f_enc_adm) { gen_put_date(o, c->st->adm); }
EMIT(f_enc_dis) { gen_put_date(o, c->st->dis); }
EMIT(f_enc_type) { put_s(o, gen_adm_type_s[c->st->type]); }
EMIT(f_enc_src) { put_s(o, gen_adm_src_s[c->st->src]); }
EMIT(f_enc_disp) { put_s(o, gen_disp_s[c->st->disp]); }
EMIT(f_enc_dept) { put_s(o, gen_depts[c->st->dept].name); }
EMIT(f_enc_drg)
{
    const stay *s = c->st;
    put_s(o, s->pcm >= 0 ? gen_comorbs[s->pcm].codes[c->pt->cm_code[s->pcm]].drg : gen_depts[s->dept].dx[s->pidx].drg);
}
EMIT(f_enc_cost) { gen_put_fixed(o, c->st->cost, 2); }
EMIT(f_seq) { gen_put_i(o, c->seq); }
EMIT(f_icd10)
{
    (void)c;
    put_s(o, "icd10");
}
EMIT(f_code) { put_s(o, c->code); }
EMIT(f_poa) { put_c(o, c->poa); }
EMIT(f_pdate) { gen_put_date(o, c->pdate); }

static const struct field_def { int table; const char *col; emit_fn fn; } field_defs[] = {
    {PX_TAB_FACILITIES, "facility_id", f_fac_id}, {PX_TAB_FACILITIES, "name", f_fac_name},
    {PX_TAB_FACILITIES, "type", f_fac_type}, {PX_TAB_FACILITIES, "state", f_fac_state},
    {PX_TAB_FACILITIES, "beds", f_fac_beds},
    {PX_TAB_PROVIDERS, "provider_id", f_prov_id}, {PX_TAB_PROVIDERS, "name", f_prov_name},
    {PX_TAB_PROVIDERS, "specialty", f_prov_specialty}, {PX_TAB_PROVIDERS, "facility_id", f_fac_id},
    {PX_TAB_PATIENTS, "patient_id", f_pt_id}, {PX_TAB_PATIENTS, "mrn", f_pt_mrn},
    {PX_TAB_PATIENTS, "ssn", f_pt_ssn}, {PX_TAB_PATIENTS, "first_name", f_pt_first},
    {PX_TAB_PATIENTS, "last_name", f_pt_last}, {PX_TAB_PATIENTS, "birth_date", f_pt_birth},
    {PX_TAB_PATIENTS, "sex", f_pt_sex}, {PX_TAB_PATIENTS, "zip", f_pt_zip},
    {PX_TAB_PATIENTS, "phone", f_pt_phone}, {PX_TAB_PATIENTS, "email", f_pt_email},
    {PX_TAB_PATIENTS, "death_date", f_pt_death},
    {PX_TAB_ENCOUNTERS, "encounter_id", f_enc_id}, {PX_TAB_ENCOUNTERS, "patient_id", f_pt_id},
    {PX_TAB_ENCOUNTERS, "facility_id", f_enc_fac}, {PX_TAB_ENCOUNTERS, "attending_id", f_enc_attending},
    {PX_TAB_ENCOUNTERS, "admission_date", f_enc_adm}, {PX_TAB_ENCOUNTERS, "discharge_date", f_enc_dis},
    {PX_TAB_ENCOUNTERS, "admission_type", f_enc_type}, {PX_TAB_ENCOUNTERS, "admission_source", f_enc_src},
    {PX_TAB_ENCOUNTERS, "discharge_disposition", f_enc_disp},
    {PX_TAB_ENCOUNTERS, "department", f_enc_dept}, {PX_TAB_ENCOUNTERS, "drg", f_enc_drg},
    {PX_TAB_ENCOUNTERS, "total_cost", f_enc_cost},
    {PX_TAB_DIAGNOSES, "encounter_id", f_enc_id}, {PX_TAB_DIAGNOSES, "seq", f_seq},
    {PX_TAB_DIAGNOSES, "code_system", f_icd10}, {PX_TAB_DIAGNOSES, "code", f_code},
    {PX_TAB_DIAGNOSES, "present_on_admission", f_poa},
    {PX_TAB_PROCEDURES, "encounter_id", f_enc_id}, {PX_TAB_PROCEDURES, "seq", f_seq},
    {PX_TAB_PROCEDURES, "code_system", f_icd10}, {PX_TAB_PROCEDURES, "code", f_code},
    {PX_TAB_PROCEDURES, "procedure_date", f_pdate},
};

int gen_layout_build(gen *g, px_err *e)
{
    for (int t = 0; t < PX_TAB__COUNT; t++) {
        const px_table *tab = &px_canonical[t];
        if (tab->ncols > GEN_MAX_COLS)
            return px_err_set(e, PX_ESTATE, "canonical table '%s' has too many columns", tab->name);
        for (int i = 0; i < tab->ncols; i++) {
            g->layout[t][i] = NULL;
            for (size_t k = 0; k < sizeof field_defs / sizeof field_defs[0]; k++)
                if (field_defs[k].table == t && strcmp(field_defs[k].col, tab->cols[i].name) == 0)
                    g->layout[t][i] = field_defs[k].fn;
            if (!g->layout[t][i] && tab->cols[i].required)
                return px_err_set(e, PX_ESTATE, "generator cannot fill required column '%s.%s'",
                                  tab->name, tab->cols[i].name);
        }
    }
    return 0;
}

static void emit_row(gen *g, int t, const rowctx *c)
{
    gen_out *o = &g->out[t];
    for (int i = 0; i < px_canonical[t].ncols; i++) {
        if (i) put_c(o, ',');
        if (g->layout[t][i]) g->layout[t][i](o, c);
    }
    put_c(o, '\n');
}

void gen_emit_header(gen *g, int t)
{
    for (int i = 0; i < px_canonical[t].ncols; i++) {
        if (i) put_c(&g->out[t], ',');
        put_s(&g->out[t], px_canonical[t].cols[i].name);
    }
    put_c(&g->out[t], '\n');
}

/* ---- rows of a patient ---- */

static char poa_draw(gen_rng *r, double y)  /* Y with probability y, else mostly N */
{
    double u = rng_unif(r);
    return u < y ? 'Y' : u < y + (1.0 - y) * 0.65 ? 'N' : u < y + (1.0 - y) * 0.9 ? 'U' : 'W';
}

static void emit_diagnoses(gen *g, gen_rng *r, rowctx *c)
{
    const stay *s = c->st;
    const patient *pt = c->pt;
    const char *principal = s->pcm >= 0 ? gen_comorbs[s->pcm].codes[pt->cm_code[s->pcm]].code
                                        : gen_depts[s->dept].dx[s->pidx].code;
    c->seq = 1, c->code = principal, c->poa = rng_bern(r, 0.97) ? 'Y' : rng_bern(r, 0.67) ? 'U' : 'W';
    emit_row(g, PX_TAB_DIAGNOSES, c);
    for (int cm = 0; cm < CM__COUNT; cm++) {
        if (!has_cm(pt, cm) || cm == s->pcm) continue;
        c->seq++, c->code = gen_comorbs[cm].codes[pt->cm_code[cm]].code, c->poa = 'Y';
        emit_row(g, PX_TAB_DIAGNOSES, c);
    }
    int idx[N_FILLER];
    for (int i = 0; i < N_FILLER; i++) idx[i] = i;
    long nf = gen_poisson(r, 3.5);
    for (int i = 0; i < nf && i < N_FILLER && c->seq < GEN_MAX_DX; i++) {
        int j = rng_int(r, i, N_FILLER - 1), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
        if (strcmp(gen_filler_dx[idx[i]], principal) == 0) continue;
        c->seq++, c->code = gen_filler_dx[idx[i]], c->poa = poa_draw(r, 0.88);
        emit_row(g, PX_TAB_DIAGNOSES, c);
    }
    g->n_dx += c->seq;
}

/* Procedure dates: on the admission day with a fixed probability (the first
 * surgical one 0.5, others PX_DAY0_SHARE), else a later day of the stay (the
 * first surgical one day 1), so that the admission-day count (a feature known at
 * admission) does not depend on the length of stay or on a death; a later
 * procedure of a stay that ended on its admission day (a death) is not written. */
static void emit_procedures(gen *g, gen_rng *r, rowctx *c)
{
    const stay *s = c->st;
    int n = 0, idx[8], dates[8], los = s->dis - s->adm;
    for (int i = 0; i < g->npx[s->dept]; i++) idx[i] = i;
    for (int i = 0; i < s->nproc; i++) {
        int j = rng_int(r, i, g->npx[s->dept] - 1), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
        int first_surgical = gen_depts[s->dept].surgical && i == 0;
        int day = rng_bern(r, first_surgical ? 0.5 : PX_DAY0_SHARE) ? 0 : first_surgical ? 1 : rng_int(r, 1, los > 1 ? los : 1);
        if (day > los) continue;
        t = idx[n], idx[n] = idx[i], idx[i] = t;
        dates[n++] = s->adm + day;
    }
    for (int i = 1; i < n; i++)  /* insertion sort by date: seq follows the calendar */
        for (int j = i; j > 0 && dates[j] < dates[j - 1]; j--) {
            int td = dates[j], ti = idx[j];
            dates[j] = dates[j - 1], idx[j] = idx[j - 1];
            dates[j - 1] = td, idx[j - 1] = ti;
        }
    for (int i = 0; i < n; i++) {
        c->seq = i + 1, c->code = gen_depts[s->dept].px[idx[i]], c->pdate = dates[i];
        emit_row(g, PX_TAB_PROCEDURES, c);
    }
    g->n_px += n;
}

void gen_emit_patient(gen *g, gen_rng *r, const patient *pt, int n)
{
    rowctx c = {.g = g, .pt = pt};
    emit_row(g, PX_TAB_PATIENTS, &c);
    for (int k = 0; k < n; k++) {
        c.st = &g->stays[k];
        c.enc = ++g->n_enc;
        emit_row(g, PX_TAB_ENCOUNTERS, &c);
        emit_diagnoses(g, r, &c);
        emit_procedures(g, r, &c);
    }
}

void gen_emit_facilities(gen *g)
{
    rowctx c = {.g = g};
    for (c.fac = 0; c.fac < g->nfac; c.fac++) emit_row(g, PX_TAB_FACILITIES, &c);
    for (c.prov = 0; c.prov < g->nprov; c.prov++) {
        c.fac = g->prov[c.prov].fac;
        emit_row(g, PX_TAB_PROVIDERS, &c);
    }
}
