/* fileutil.c: small file helpers shared by every library: whole-file reads with a
 * size limit, atomic writes (temporary file, fsync, rename), mkdir -p, SHA-256.
 * Atomic writes mean a reader sees the old bytes or the new ones, never a mix. */
#include "engine/engine.h"
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void px_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

int px_sha256_trailer_add(px_buf *b)
{
    char hex[65];
    px_sha256_hex(b->data, b->len, hex);
    return px_buf_printf(b, "sha256 %s\n", hex) < 0 ? -1 : 0;
}

long long px_sha256_trailer_check(const void *bytes, size_t len)
{
    const char *t = bytes;
    const size_t tl = PX_SHA256_TRAILER_LEN;
    if (!bytes || len < tl || memcmp(t + len - tl, "sha256 ", 7) != 0 || t[len - 1] != '\n') return PX_TRAILER_MISSING;
    char hex[65];
    px_sha256_hex(bytes, len - tl, hex);
    return memcmp(hex, t + len - tl + 7, 64) == 0 ? (long long)(len - tl) : PX_TRAILER_MISMATCH;
}

int px_file_read(const char *path, size_t max_bytes, unsigned char **data, size_t *len, px_err *e)
{
    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: a FIFO in place of the file must not hang open(2); it is refused below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return px_err_set(e, errno == ENOENT ? PX_ENOTFOUND : PX_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return px_err_set(e, PX_EIO, "'%s' is not a regular file", path);
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        close(fd);
        return px_err_set(e, PX_EINVAL, "'%s' is too large (%lld bytes; limit %zu)", path, (long long)st.st_size, max_bytes);
    }
    /* room for the NUL and one byte more, so that a file that grew is noticed */
    size_t size = (size_t)st.st_size, cap = size + 2, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        return px_err_set(e, PX_ENOMEM, "out of memory reading '%s'", path);
    }
    for (;;) {
        if (n > size) { /* the file grew while we read it: refuse rather than guess */
            free(buf);
            close(fd);
            return px_err_set(e, PX_EIO, "'%s' changed while it was read", path);
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int err = errno;
            free(buf);
            close(fd);
            return px_err_set(e, PX_EIO, "cannot read '%s': %s", path, strerror(err));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

int px_file_write_atomic(const char *path, const void *data, size_t len, int mode, px_err *e)
{
    return px_file_write_atomic_owned(path, data, len, mode, (uid_t)-1, (gid_t)-1, e);
}

int px_file_write_atomic_owned(const char *path, const void *data, size_t len, int mode, uid_t uid, gid_t gid,
                               px_err *e)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return px_err_set(e, PX_EINVAL, "path too long: '%s'", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return px_err_set(e, PX_EIO, "cannot create '%s': %s", tmp, strerror(errno));
    const unsigned char *p = data;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
            int err = errno;
            close(fd);
            unlink(tmp);
            return px_err_set(e, PX_EIO, "cannot write '%s': %s", tmp, strerror(err));
        }
        off += (size_t)w;
    }
    /* the owner is set before the rename: path never names a file of the wrong owner */
    if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0) {
        int err = errno;
        close(fd);
        unlink(tmp);
        return px_err_set(e, PX_EIO, "cannot give '%s' its owner: %s", tmp, strerror(err));
    }
    if (fchmod(fd, (mode_t)mode) != 0 || fsync(fd) != 0) {
        int err = errno;
        close(fd);
        unlink(tmp);
        return px_err_set(e, PX_EIO, "cannot sync '%s': %s", tmp, strerror(err));
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return px_err_set(e, PX_EIO, "cannot write '%s': %s", path, strerror(err));
    }
    return 0;
}

int px_mkdir_p(const char *dir, int mode, px_err *e)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return px_err_set(e, PX_EINVAL, "directory name too long: '%s'", dir);
    for (char *s = path + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(path, (mode_t)mode) != 0 && errno != EEXIST)
            return px_err_set(e, PX_EIO, "cannot create directory '%s': %s", path, strerror(errno));
        *s = '/';
    }
    if (mkdir(path, (mode_t)mode) != 0 && errno != EEXIST)
        return px_err_set(e, PX_EIO, "cannot create directory '%s': %s", path, strerror(errno));
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return px_err_set(e, PX_EIO, "'%s' is not a directory", path);
    return 0;
}
