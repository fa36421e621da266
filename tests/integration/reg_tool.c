/* reg_tool.c: a test driver for registry.sh. Registers real fitted models on a
 * seeded synthetic dataset built in memory (the same seed gives the same data,
 * model and artifacts), and loads versions back through the registry's verified
 * paths. Commands:
 *   register NAME --seed S [--n N] [--algo A] [--set SET] [--l2 X] [--dump DIR]
 *   load NAME [REF]        load-dir DIR        read NAME VERSION FILE
 * Metrics come from the evaluation library (px_eval_*), as in training.
 * Exit codes as the CLI's: 0 ok, 1 failed, 2 usage, 3 nothing to do. */
#include "registry/registry.h"
#include <libpq-fe.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static uint64_t rng_next(void) { return px_splitmix64(&rng_state); }

static double unif(void)
{
    return (double)(rng_next() >> 11) / 9007199254740992.0;
}

static double poisson_draw(double mu)
{
    double l = exp(-mu), p = 1;
    int k = 0;
    do {
        k++;
        p *= unif();
    } while (p > l);
    return k - 1;
}

static char *dup(const char *s)
{
    char *t = malloc(strlen(s) + 1);
    if (t) strcpy(t, s);
    return t;
}

/* n rows of: age_years (18-95), sex (F/M), charlson (0-10, 5% missing),
 * admit_type (elective/emergency/urgent); label 0/1 (binary) or a count. */
static px_dataset *make_data(size_t n, uint64_t seed, int binary)
{
    px_dataset *d = px_dataset_new(n, 4);
    if (!d) return NULL;
    static const char *const names[] = {"age_years", "sex", "charlson", "admit_type"};
    for (int j = 0; j < 4; j++) d->names[j] = dup(names[j]);
    d->kind[0] = d->kind[2] = PX_COL_NUMERIC;
    d->kind[1] = d->kind[3] = PX_COL_CATEGORICAL;
    d->nlevels[1] = 2;
    d->levels[1] = calloc(2, sizeof(char *));
    d->levels[1][0] = dup("F");
    d->levels[1][1] = dup("M");
    d->nlevels[3] = 3;
    d->levels[3] = calloc(3, sizeof(char *));
    d->levels[3][0] = dup("elective");
    d->levels[3][1] = dup("emergency");
    d->levels[3][2] = dup("urgent");
    rng_state = seed;
    for (size_t i = 0; i < n; i++) {
        double age = floor(18 + 77 * unif());
        int male = unif() < 0.45;
        double ch = floor(unif() * unif() * 11);
        int adm = unif() < 0.6 ? 1 : unif() < 0.5 ? 0 : 2;
        double lp = -2.0 + 0.03 * (age - 60) + 0.3 * ch + 0.5 * (adm == 1) - 0.2 * male;
        double y = binary ? (unif() < 1 / (1 + exp(-lp))) : poisson_draw(exp(1.0 + 0.01 * (age - 60) + 0.1 * ch));
        d->x[i * 4 + 0] = age;
        d->x[i * 4 + 1] = male;
        d->x[i * 4 + 2] = unif() < 0.05 ? NAN : ch;
        d->x[i * 4 + 3] = adm;
        d->y[i] = y;
        d->day[i] = (int32_t)(17900 + i / 4);
        d->group[i] = i / 3 + 1;
        d->sex[i] = male ? 'M' : 'F';
        d->age[i] = age;
    }
    snprintf(d->table, sizeof d->table, "test.synthetic");
    snprintf(d->label, sizeof d->label, "y");
    snprintf(d->time_col, sizeof d->time_col, "admission_date");
    px_dataset_fingerprint(d);
    return d;
}

static const char *age_band(double age)
{
    return age < 65 ? "18-64" : age < 80 ? "65-79" : "80+";
}

/* Appends "key": eval JSON (px_eval_bin_json / px_eval_reg_json) of the holdout
 * rows selected by keep (NULL: all). A group with one class only is left out. */
static int add_eval(px_buf *b, const char *key, const double *y, const double *p, const int *keep, int want, size_t n,
                    int binary, int *first)
{
    double *yy = malloc(n * sizeof *yy), *pp = malloc(n * sizeof *pp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!keep || keep[i] == want) {
            yy[m] = y[i];
            pp[m++] = p[i];
        }
    char *js = NULL;
    px_err e = {0};
    if (binary) {
        px_eval_bin ev;
        if (px_eval_binary(yy, pp, m, &ev, &e) == 0) js = px_eval_bin_json(&ev);
    } else {
        px_eval_reg ev;
        if (px_eval_regression(yy, pp, m, &ev, &e) == 0) js = px_eval_reg_json(&ev);
    }
    if (js) {
        px_buf_printf(b, "%s\"%s\":%s", *first ? "" : ",", key, js);
        *first = 0;
    }
    free(js);
    free(yy);
    free(pp);
    return js ? 0 : -1;
}

/* calibration.csv as train.c writes it: the deciles of risk of the evaluation. */
static int calibration(px_buf *b, const double *y, const double *p, size_t n)
{
    px_eval_bin ev;
    px_err e = {0};
    if (px_eval_binary(y, p, n, &ev, &e) != 0) return -1;
    px_buf_adds(b, "decile,n,events,mean_predicted,observed_rate\n");
    for (size_t g = 0; g < ev.ngroups; g++)
        px_buf_printf(b, "%zu,%zu,%.0f,%.6f,%.6f\n", g + 1, ev.group[g].n, ev.group[g].events, ev.group[g].mean_pred,
                      ev.group[g].obs_rate);
    return 0;
}

static int cmd_register(PGconn *c, const px_config *cfg, int argc, char **argv)
{
    const char *name = argv[0], *set = "", *dump = NULL, *algo_s = NULL;
    uint64_t seed = 1;
    size_t n = 2000;
    double l2 = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--seed") == 0) seed = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--n") == 0) n = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--algo") == 0) algo_s = argv[i + 1];
        else if (strcmp(argv[i], "--set") == 0) set = argv[i + 1];
        else if (strcmp(argv[i], "--l2") == 0) l2 = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--dump") == 0) dump = argv[i + 1];
        else return 2;
    }
    px_algo algo = PX_ALGO_LOGIT;
    if (algo_s && px_algo_parse(algo_s, &algo) != 0) return 2;
    int binary = algo == PX_ALGO_LOGIT || algo == PX_ALGO_SVC;
    px_err e = {0};
    px_dataset *d = make_data(n, seed, binary);
    /* temporal holdout: the latest quarter of rows (they are in time order) */
    size_t ntrain = n * 3 / 4, ntest = n - ntrain;
    size_t *train = malloc(ntrain * sizeof *train), *test = malloc(ntest * sizeof *test);
    for (size_t i = 0; i < ntrain; i++) train[i] = i;
    for (size_t i = 0; i < ntest; i++) test[i] = ntrain + i;
    px_fit_params fp = px_fit_default_params(algo);
    fp.glm.l2 = l2;
    fp.svm.C = 1;
    fp.svm.gamma = 0.25;
    fp.svm.seed = seed;
    px_fit_info info;
    px_model *m = px_model_fit(d, train, ntrain, &fp, &info, &e);
    if (!m) {
        px_err_print(&e);
        return 1;
    }
    double *ptest = malloc(ntest * sizeof *ptest), *ptrain = malloc(ntrain * sizeof *ptrain);
    double *ytest = malloc(ntest * sizeof *ytest);
    int *sexk = malloc(ntest * sizeof *sexk), *agek = malloc(ntest * sizeof *agek);
    if (px_model_score(m, d, test, ntest, ptest, &e) != 0 || px_model_score(m, d, train, ntrain, ptrain, &e) != 0) {
        px_err_print(&e);
        return 1;
    }
    for (size_t i = 0; i < ntest; i++) {
        ytest[i] = d->y[test[i]];
        sexk[i] = d->sex[test[i]] == 'M';
        const char *band = age_band(d->age[test[i]]);
        agek[i] = band[0] == '1' ? 0 : band[0] == '6' ? 1 : 2;
    }
    px_buf metrics = {0}, calib = {0};
    int first = 1;
    px_buf_adds(&metrics, "{");
    add_eval(&metrics, "overall", ytest, ptest, NULL, 0, ntest, binary, &first);
    px_buf_adds(&metrics, ",\"by_sex\":{");
    first = 1;
    add_eval(&metrics, "F", ytest, ptest, sexk, 0, ntest, binary, &first);
    add_eval(&metrics, "M", ytest, ptest, sexk, 1, ntest, binary, &first);
    px_buf_adds(&metrics, "},\"by_age_band\":{");
    first = 1;
    add_eval(&metrics, "18-64", ytest, ptest, agek, 0, ntest, binary, &first);
    add_eval(&metrics, "65-79", ytest, ptest, agek, 1, ntest, binary, &first);
    add_eval(&metrics, "80+", ytest, ptest, agek, 2, ntest, binary, &first);
    px_buf_adds(&metrics, "}}");
    if (binary) calibration(&calib, ytest, ptest, ntest);
    char *ref = px_reg_reference_json(m, d, train, ntrain, ptrain, &e);
    if (!ref) {
        px_err_print(&e);
        return 1;
    }
    char params[256], split[256], defhash[65] = "";
    snprintf(params, sizeof params, "{\"algo\":\"%s\",\"l2\":%g}", px_algo_name(algo), l2);
    snprintf(split, sizeof split, "{\"method\":\"temporal\",\"holdout_time_share\":0.25,\"n_train\":%zu,\"n_test\":%zu}",
             ntrain, ntest);
    if (*set) px_sha256_hex(set, strlen(set), defhash);
    px_reg_new v = {.name = name,
                    .algo = px_algo_name(algo),
                    .task = binary ? "binary" : "regression",
                    .params_json = params,
                    .feature_set = set,
                    .feature_table = "test.synthetic",
                    .label = "y",
                    .definition_hash = defhash,
                    .fingerprint = d->fingerprint,
                    .split_json = split,
                    .metrics_json = metrics.data,
                    .calibration_csv = calib.data ? calib.data : "",
                    .reference_json = ref,
                    .model = m,
                    .source_batches = "[1]"};
    int version = 0;
    int rc = px_reg_register(c, cfg, &v, &version, &e);
    if (dump) {
        /* the training rows and their scores, for the independent check of reference.json */
        char path[4200];
        snprintf(path, sizeof path, "%s/train.csv", dump);
        FILE *f = fopen(path, "w");
        fprintf(f, "age_years,sex,charlson,admit_type,score\n");
        for (size_t i = 0; i < ntrain; i++) {
            const double *x = d->x + train[i] * 4;
            fprintf(f, "%.17g,%s,", x[0], d->levels[1][(int)x[1]]);
            if (!isnan(x[2])) fprintf(f, "%.17g", x[2]);
            fprintf(f, ",%s,%.17g\n", d->levels[3][(int)x[3]], ptrain[i]);
        }
        fclose(f);
        snprintf(path, sizeof path, "%s/terms.csv", dump);
        f = fopen(path, "w");
        size_t nt = 0;
        const px_term *t = px_model_terms(m, &nt);
        fprintf(f, "term,beta,se\n");
        for (size_t i = 0; i < nt; i++) fprintf(f, "%s,%.17g,%.17g\n", t[i].name, t[i].beta, t[i].se);
        fclose(f);
        /* the prediction of a fixed instance, to compare with the loaded model's */
        double raw[4] = {70, 1, 3, 1}, val = 0;
        px_model_predict(m, raw, &val, NULL, &e);
        snprintf(path, sizeof path, "%s/predict.txt", dump);
        f = fopen(path, "w");
        fprintf(f, "%.17g\n", val);
        fclose(f);
    }
    if (rc == 0) printf("version %d\n", version);
    else if (rc == PX_ENOTHING) printf("existing %d\n", version);
    else px_err_print(&e);
    free(ref);
    px_buf_release(&metrics);
    px_buf_release(&calib);
    px_model_free(m);
    px_dataset_free(d);
    free(train);
    free(test);
    free(ptest);
    free(ptrain);
    free(ytest);
    free(sexk);
    free(agek);
    return rc == 0 ? 0 : rc == PX_ENOTHING ? 3 : 1;
}

static int report_model(px_model *m, int version, px_err *e)
{
    if (!m) {
        px_err_print(e);
        return 1;
    }
    double raw[4] = {70, 1, 3, 1}, val = 0;
    int rc = px_model_nfeatures(m) == 4 ? px_model_predict(m, raw, &val, NULL, e) : 0;
    printf("loaded v%d %s %zu features predict %.17g\n", version, px_algo_name(px_model_algo(m)),
           px_model_nfeatures(m), val);
    px_model_free(m);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) return 2;
    px_models_init();
    px_config cfg;
    px_err e = {0};
    if (px_config_load(&cfg, &e) != 0) {
        px_err_print(&e);
        return 1;
    }
    if (strcmp(argv[1], "load-dir") == 0) {
        char pub[4200];
        snprintf(pub, sizeof pub, "%s/signing.pub", cfg.home);
        px_model *m = px_reg_load_dir(argv[2], pub, &e);
        return report_model(m, 0, &e);
    }
    if (strcmp(argv[1], "read") == 0) {
        if (argc < 5) return 2;
        unsigned char *data = NULL;
        size_t len = 0;
        if (px_reg_read_file(&cfg, argv[2], atoi(argv[3]), argv[4], &data, &len, &e) != 0) {
            px_err_print(&e);
            return 1;
        }
        fwrite(data, 1, len, stdout);
        free(data);
        return 0;
    }
    PGconn *c = px_db_connect(&cfg, &e);
    if (!c) {
        px_err_print(&e);
        return 1;
    }
    int rc = 2;
    if (strcmp(argv[1], "register") == 0) {
        rc = cmd_register(c, &cfg, argc - 2, argv + 2);
    } else if (strcmp(argv[1], "load") == 0) {
        int version = 0;
        px_model *m = px_reg_load(c, &cfg, argv[2], argc > 3 ? argv[3] : NULL, &version, &e);
        rc = report_model(m, version, &e);
    }
    PQfinish(c);
    return rc;
}
