/* artifact.c: a version's artifact directory. Writing: every file, then
 * manifest.json (listing each file's SHA-256 and size, in name order) and
 * manifest.sig (Ed25519 over the manifest's exact bytes, base64), into
 * <version>.tmp, fsynced, then renamed into place. Reading: the manifest and its
 * signature first; a file's bytes only after its size and digest match. */
#include "registry/internal.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int reg_valid_name(const char *name)
{
    if (!name || !(name[0] >= 'a' && name[0] <= 'z')) return 0;
    size_t n = strlen(name);
    if (n > 63) return 0;
    for (size_t i = 1; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_')) return 0;
    return 1;
}

/* Artifact file names: lower-case letters, digits, '_', '-', '.', not starting
 * with '.', and not the manifest's own files (so no path can leave the directory). */
static int valid_file_name(const char *f)
{
    if (!f || !*f || f[0] == '.' || strlen(f) > 64) return 0;
    for (const char *p = f; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.')) return 0;
    return strcmp(f, "manifest.json") != 0 && strcmp(f, "manifest.sig") != 0;
}

int reg_dir(const px_config *cfg, const char *name, int version, char *out, size_t outlen, px_err *e)
{
    if (!reg_valid_name(name)) return px_err_set(e, PX_EINVAL, "invalid model name '%s'", name ? name : "");
    int n = version > 0 ? snprintf(out, outlen, "%s/registry/%s/%d", cfg->home, name, version)
                        : snprintf(out, outlen, "%s/registry/%s", cfg->home, name);
    if (n < 0 || (size_t)n >= outlen) return px_err_set(e, PX_EINVAL, "registry path too long");
    return 0;
}

int reg_rmdir(const char *dir, px_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : px_err_set(e, PX_EIO, "cannot open '%s': %s", dir, strerror(errno));
    struct dirent *de;
    char path[4400];
    int rc = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (unlink(path) != 0 && rc == 0) rc = px_err_set(e, PX_EIO, "cannot remove '%s': %s", path, strerror(errno));
    }
    closedir(d);
    if (rmdir(dir) != 0 && rc == 0) rc = px_err_set(e, PX_EIO, "cannot remove '%s': %s", dir, strerror(errno));
    return rc;
}

static int fsync_dir(const char *dir, px_err *e)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return px_err_set(e, PX_EIO, "cannot open '%s': %s", dir, strerror(errno));
    int rc = fsync(fd) == 0 ? 0 : px_err_set(e, PX_EIO, "cannot sync '%s': %s", dir, strerror(errno));
    close(fd);
    return rc;
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const reg_file *)a)->name, ((const reg_file *)b)->name);
}

char *reg_json_print(const cJSON *j)
{
    char *s = cJSON_Print(j);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (!t) {
        free(s);
        return NULL;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    return t;
}

int reg_write_dir(const char *tmpdir, const char *dir, cJSON *manifest, const reg_file *files, size_t nfiles,
                  const char *priv_path, char manifest_sha[65], px_err *e)
{
    reg_file *sorted = NULL;
    char *text = NULL, path[4400], hex[65], b64sig[REG_SIG_BYTES * 2];
    unsigned char sig[REG_SIG_BYTES];
    int rc = 0, made = 0;
    sorted = malloc((nfiles ? nfiles : 1) * sizeof *sorted);
    cJSON *list = cJSON_CreateObject();
    if (!sorted || !list) {
        cJSON_Delete(list);
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(sorted, files, nfiles * sizeof *sorted);
    qsort(sorted, nfiles, sizeof *sorted, cmp_file);
    cJSON_DeleteItemFromObjectCaseSensitive(manifest, "files");
    cJSON_AddItemToObject(manifest, "files", list);
    for (size_t i = 0; i < nfiles; i++) {
        if (!valid_file_name(sorted[i].name) || (i > 0 && strcmp(sorted[i].name, sorted[i - 1].name) == 0)) {
            rc = px_err_set(e, PX_EINVAL, "invalid or repeated artifact file name '%s'", sorted[i].name);
            goto done;
        }
        px_sha256_hex(sorted[i].data, sorted[i].len, hex);
        cJSON *f = cJSON_AddObjectToObject(list, sorted[i].name);
        if (!f || !cJSON_AddStringToObject(f, "sha256", hex) ||
            !cJSON_AddNumberToObject(f, "bytes", (double)sorted[i].len)) {
            rc = px_err_set(e, PX_ENOMEM, "out of memory");
            goto done;
        }
    }
    if (!(text = reg_json_print(manifest))) {
        rc = px_err_set(e, PX_ENOMEM, "out of memory");
        goto done;
    }
    size_t tlen = strlen(text);
    if ((rc = reg_sign(priv_path, text, tlen, sig, e)) != 0) goto done;
    reg_b64_encode(sig, sizeof sig, b64sig);
    strcat(b64sig, "\n");
    px_sha256_hex(text, tlen, manifest_sha);

    if (mkdir(tmpdir, 0755) != 0) {
        rc = px_err_set(e, PX_EIO, "cannot create '%s': %s", tmpdir, strerror(errno));
        goto done;
    }
    made = 1;
    for (size_t i = 0; i < nfiles; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, sorted[i].name);
        if ((rc = px_file_write_atomic(path, sorted[i].data, sorted[i].len, 0644, e)) != 0) goto done;
    }
    snprintf(path, sizeof path, "%s/manifest.json", tmpdir);
    if ((rc = px_file_write_atomic(path, text, tlen, 0644, e)) != 0) goto done;
    snprintf(path, sizeof path, "%s/manifest.sig", tmpdir);
    if ((rc = px_file_write_atomic(path, b64sig, strlen(b64sig), 0644, e)) != 0) goto done;
    if ((rc = fsync_dir(tmpdir, e)) != 0) goto done;
    if (rename(tmpdir, dir) != 0) {
        rc = px_err_set(e, PX_EIO, "cannot rename '%s' to '%s': %s", tmpdir, dir, strerror(errno));
        goto done;
    }
    made = 0;
    /* the rename is durable once the parent directory is synced */
    snprintf(path, sizeof path, "%s", dir);
    char *slash = strrchr(path, '/');
    if (slash) *slash = '\0';
    rc = fsync_dir(path, e);
done:
    if (rc != 0 && made) reg_rmdir(tmpdir, NULL);
    free(text);
    free(sorted);
    return rc;
}

void reg_manifest_release(reg_manifest *m)
{
    if (!m) return;
    cJSON_Delete(m->json);
    free(m->bytes);
    memset(m, 0, sizeof *m);
}

/* A "files" entry: sha256 (64 lower-case hex) and bytes (a whole number >= 0). */
static int file_entry(const cJSON *f, char sha[65], size_t *bytes)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(f, "sha256");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(f, "bytes");
    if (!cJSON_IsString(s) || strlen(s->valuestring) != 64 || !cJSON_IsNumber(b)) return -1;
    for (int i = 0; i < 64; i++) {
        char c = s->valuestring[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return -1;
    }
    double v = b->valuedouble;
    if (!(v >= 0 && v <= (double)REG_FILE_MAX) || v != (double)(size_t)v) return -1;
    memcpy(sha, s->valuestring, 65);
    *bytes = (size_t)v;
    return 0;
}

/* Opens path for reading without following a symbolic link and without
 * blocking: a FIFO or a device put in place of an artifact would hang open(2)
 * or read(2) (and with them `registry verify`, the server's start and its
 * reload poller). Only a regular file is opened. Returns the descriptor and
 * fills *st, or -1 with *why saying what is wrong ("missing", "not a regular
 * file", "unreadable"). */
static int open_regular(const char *path, struct stat *st, const char **why)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        *why = errno == ENOENT ? "missing" : errno == ELOOP ? "not a regular file" : "unreadable";
        return -1;
    }
    if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
        close(fd);
        *why = "not a regular file";
        return -1;
    }
    return fd;
}

/* Reads the whole of an open regular file of `size` bytes (fstat's) into a
 * NUL-terminated buffer. A file that grew or shrank while it was read is
 * refused (returns 1); 0 on success, -1 on a read error or ENOMEM. */
static int read_fd(int fd, size_t size, unsigned char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    /* room for the NUL and one byte more, so that a file that grew is noticed */
    size_t cap = size + 2, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return -1;
    for (;;) {
        if (n > size) break;
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            return -1;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (n != size) {
        free(buf);
        return 1;
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

/* A manifest's own file (manifest.json, manifest.sig): regular, at most max bytes. */
static int read_small(const char *ctx, const char *dir, const char *file, size_t max, unsigned char **data,
                      size_t *len, px_err *e)
{
    char path[4400];
    struct stat st;
    const char *why = "";
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open_regular(path, &st, &why);
    if (fd < 0) return px_err_set(e, PX_ECORRUPT, "%s: %s is %s", ctx, file, why);
    if ((unsigned long long)st.st_size > max) {
        close(fd);
        return px_err_set(e, PX_ECORRUPT, "%s: %s is too large (%lld bytes; limit %zu)", ctx, file,
                          (long long)st.st_size, max);
    }
    int r = read_fd(fd, (size_t)st.st_size, data, len);
    close(fd);
    if (r != 0)
        return px_err_set(e, PX_ECORRUPT, "%s: %s is %s", ctx, file, r > 0 ? "changing while it is read" : "unreadable");
    return 0;
}

/* The checks on a manifest's bytes (m->bytes, m->len) once its signature held:
 * parses them into m->json and fills m->name and m->version (and m->ctx when
 * expect_name is NULL). 0 or PX_ECORRUPT; the caller releases m either way. */
int reg_manifest_parse(reg_manifest *m, const char *expect_name, int expect_version, const char *verb, px_err *e)
{
    m->json = cJSON_ParseWithLength((const char *)m->bytes, m->len);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(m->json, "format");
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(m->json, "name");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(m->json, "version");
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(m->json, "files");
    if (!cJSON_IsObject(m->json) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, REG_MANIFEST_FORMAT) != 0 ||
        !cJSON_IsString(nm) || !reg_valid_name(nm->valuestring) || !cJSON_IsNumber(ver) || ver->valueint < 1 ||
        ver->valuedouble != (double)ver->valueint || !cJSON_IsObject(files)) {
        return px_err_set(e, PX_ECORRUPT, "%s: manifest.json is not a prognos manifest", m->ctx);
    }
    for (const cJSON *f = files->child; f; f = f->next) {
        char sha[65];
        size_t bytes;
        if (!valid_file_name(f->string) || file_entry(f, sha, &bytes) != 0) {
            return px_err_set(e, PX_ECORRUPT, "%s: manifest.json lists a malformed file entry", m->ctx);
        }
    }
    /* a validly signed manifest of another version (a directory swapped in) is refused */
    if (expect_name && (strcmp(nm->valuestring, expect_name) != 0 || ver->valueint != expect_version)) {
        return px_err_set(e, PX_ECORRUPT, "%s: manifest.json is signed for model '%s' v%d", m->ctx, nm->valuestring,
                        ver->valueint);
    }
    snprintf(m->name, sizeof m->name, "%s", nm->valuestring);
    m->version = ver->valueint;
    if (!expect_name) snprintf(m->ctx, sizeof m->ctx, "%s model '%s' v%d", verb, m->name, m->version);
    return 0;
}

int reg_manifest_open(const char *dir, const char *pub_path, const char *expect_name, int expect_version,
                      const char *verb, reg_manifest *m, px_err *e)
{
    char who[160];
    unsigned char *sigtext = NULL, sig[REG_SIG_BYTES + 4];
    size_t siglen = 0;
    int rc = 0;
    memset(m, 0, sizeof *m);
    if (expect_name) snprintf(who, sizeof who, "model '%s' v%d", expect_name, expect_version);
    else snprintf(who, sizeof who, "model in '%.120s'", dir);
    snprintf(m->ctx, sizeof m->ctx, "%s %s", verb, who);

    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = px_err_set(e, PX_ECORRUPT, "%s: artifact directory '%s' is missing", m->ctx, dir);
        goto done;
    }
    if ((rc = read_small(m->ctx, dir, "manifest.json", REG_MANIFEST_MAX, &m->bytes, &m->len, e)) != 0) goto done;
    if ((rc = read_small(m->ctx, dir, "manifest.sig", 1024, &sigtext, &siglen, e)) != 0) goto done;
    /* exactly the base64 of 64 bytes, optionally one newline: anything else is not our signature */
    size_t tl = siglen;
    if (tl > 0 && sigtext[tl - 1] == '\n') tl--;
    long got = reg_b64_decode((const char *)sigtext, tl, sig, sizeof sig);
    if (got != REG_SIG_BYTES) {
        rc = px_err_set(e, PX_ECORRUPT, "%s: manifest.sig is malformed (not a base64 Ed25519 signature)", m->ctx);
        goto done;
    }
    rc = reg_verify_sig(pub_path, m->bytes, m->len, sig, REG_SIG_BYTES, e);
    if (rc == PX_ECORRUPT) {
        px_err_set(e, PX_ECORRUPT, "%s: signature mismatch: manifest.sig does not match manifest.json", m->ctx);
        /* for the diagnosis only (nothing else is taken from an unverified manifest):
         * which key does it claim, and which key is ours? */
        char ours[65] = "";
        unsigned char *pub = NULL;
        size_t plen = 0;
        if (px_file_read(pub_path, 16384, &pub, &plen, NULL) == 0) px_sha256_hex(pub, plen, ours);
        free(pub);
        cJSON *claim = cJSON_ParseWithLength((const char *)m->bytes, m->len);
        const cJSON *kid = cJSON_GetObjectItemCaseSensitive(claim, "key_id");
        if (cJSON_IsString(kid) && ours[0] && strcmp(kid->valuestring, ours) != 0)
            px_err_detail(e, "the manifest names signing key %.16s..., the public key '%s' is %.16s...",
                          kid->valuestring, pub_path, ours);
        else
            px_err_detail(e, "public key: %s", pub_path);
        cJSON_Delete(claim);
        px_err_hint(e, "the manifest was changed after signing, or it was signed with another installation's key");
        goto done;
    }
    if (rc != 0) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", e ? e->msg : "");
        px_err_wrap(e, rc, "%s: %s", m->ctx, inner); /* keeps the key's detail and hint */
        goto done;
    }
    /* signed, so from here on a parse failure means our own writer is broken */
    rc = reg_manifest_parse(m, expect_name, expect_version, verb, e);
done:
    free(sigtext);
    if (rc != 0) reg_manifest_release(m);
    if (rc != 0) snprintf(m->ctx, sizeof m->ctx, "%s %s", verb, who);
    return rc;
}

int reg_manifest_read(const reg_manifest *m, const char *dir, const char *file, unsigned char **data, size_t *len,
                      px_err *e)
{
    char path[4400], sha[65], got[65];
    size_t want = 0;
    *data = NULL;
    *len = 0;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(m->json, "files");
    const cJSON *f = valid_file_name(file) ? cJSON_GetObjectItemCaseSensitive(files, file) : NULL;
    if (!f) return px_err_set(e, PX_ENOTFOUND, "%s: the manifest lists no file '%s'", m->ctx, file);
    file_entry(f, sha, &want); /* checked in reg_manifest_open */
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat st;
    const char *why = "";
    int fd = open_regular(path, &st, &why);
    if (fd < 0) return px_err_set(e, PX_ECORRUPT, "%s: %s is %s", m->ctx, file, why);
    if ((size_t)st.st_size != want) {
        close(fd);
        px_err_set(e, PX_ECORRUPT, "%s: %s is %s (%lld bytes; the manifest says %zu)", m->ctx, file,
                   (size_t)st.st_size < want ? "truncated" : "longer than signed", (long long)st.st_size, want);
        return PX_ECORRUPT;
    }
    int r = read_fd(fd, want, data, len);
    close(fd);
    if (r < 0) return px_err_set(e, PX_EIO, "%s: cannot read %s: %s", m->ctx, file, strerror(errno));
    /* the file changed size while it was read: as corrupt as a wrong size */
    if (r > 0) return px_err_set(e, PX_ECORRUPT, "%s: %s changed size while it was read", m->ctx, file);
    px_sha256_hex(*data, *len, got);
    if (strcmp(got, sha) != 0) {
        free(*data);
        *data = NULL;
        *len = 0;
        px_err_set(e, PX_ECORRUPT, "%s: %s failed its integrity check (SHA-256 differs from the manifest)", m->ctx,
                   file);
        px_err_detail(e, "expected %s, found %s", sha, got);
        px_err_hint(e, "the file was changed after it was signed; restore it or register the model again");
        return PX_ECORRUPT;
    }
    return 0;
}

int reg_manifest_check_all(const reg_manifest *m, const char *dir, const char *skip, px_err *e)
{
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(m->json, "files");
    int rc = 0;
    for (const cJSON *f = files->child; f; f = f->next) {
        if (skip && strcmp(f->string, skip) == 0) continue;
        unsigned char *data = NULL;
        size_t len = 0;
        rc = reg_manifest_read(m, dir, f->string, &data, &len, e);
        free(data);
        if (rc != 0) return rc;
    }
    /* nothing unsigned may sit beside the signed files (a dropped-in file is
     * either an attack or a mistake; either way it is not this version) */
    DIR *d = opendir(dir);
    if (!d) return px_err_set(e, PX_ECORRUPT, "%s: cannot list '%s': %s", m->ctx, dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strcmp(n, "manifest.json") == 0 ||
            strcmp(n, "manifest.sig") == 0)
            continue;
        if (!cJSON_GetObjectItemCaseSensitive(files, n)) {
            rc = px_err_set(e, PX_ECORRUPT, "%s: unexpected file '%.200s' (not in the signed manifest)", m->ctx, n);
            break;
        }
    }
    closedir(d);
    return rc;
}

cJSON *reg_json_parse(const char *text, const char *dflt, int want_array, const char *what, px_err *e)
{
    const char *t = text && *text ? text : dflt;
    cJSON *j = cJSON_Parse(t);
    if (!j || (want_array ? !cJSON_IsArray(j) : !cJSON_IsObject(j))) {
        cJSON_Delete(j);
        px_err_set(e, PX_EINVAL, "%s is not a JSON %s", what, want_array ? "array" : "object");
        return NULL;
    }
    return j;
}
