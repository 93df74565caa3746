/*
 * The lab guest's writer: PID 1's last act (/init execs it). It writes fixed-size records to every
 * disk of the VM (/dev/vda, /dev/vdb, ...) with O_DIRECT | O_DSYNC, and reports each write the disk
 * acknowledged on the second serial port (/dev/ttyS1, which QEMU writes to a file on the host)
 * before it issues the next one. It runs until a line "STOP" arrives on its console (/dev/console,
 * the first serial port, a unix socket on the host), then flushes and powers the VM off.
 *
 * Parameters, from /proc/cmdline (dotted names never reach init's argv or environment):
 *   lmw.nonce=<hex>      the run's 64-bit nonce, in every record (required)
 *   lmw.disks=<n>        how many disks to write (vda ...; required)
 *   lmw.off=<bytes>      start of the write region on every disk (multiple of the record size)
 *   lmw.len=<bytes>      length of the region (multiple of the record size)
 *   lmw.rec=<bytes>      record size (multiple of 512, 512..65536; default 4096)
 *   lmw.rate=<n>         writes per second over all disks, 0 = as fast as it goes (default 0)
 *
 * A record (little-endian), `rec` bytes:
 *   0  u64 magic "LMWREC01"     8 u32 disk index     12 u32 record size
 *   16 u64 sequence (per disk, from 1)                24 u64 byte offset on the disk
 *   32 u64 nonce                40 u64 reserved (0)  48 .. rec-4: filler from (nonce, disk, seq)
 *   rec-4 u32 CRC-32 (IEEE, zlib's) of bytes [0, rec-4)
 * Offsets: slot = xorshift64 stream seeded from the nonce, modulo the region's slots, so later
 * writes land on earlier ones.
 *
 * The acknowledgement channel (/dev/ttyS1, raw mode), one line each:
 *   START <nonce> <disks> <off> <len> <rec> <rate>
 *   ACK <disk> <seq> <offset> <t_us> <lat_us>
 *                                 after pwrite() returned the full record (O_DSYNC: it is durable);
 *                                 t_us: the guest's CLOCK_MONOTONIC when it returned, lat_us: how
 *                                 long the pwrite() took, both in microseconds (for benchmarks)
 *   STOPPING                      the stop request was read
 *   DONE <disk> <writes>          per disk, after its final fsync
 *   ERR <text>                    then the VM powers off (or panics, which with panic=-1 and
 *                                 QEMU's -no-reboot also ends QEMU)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_DISKS 8
#define MAGIC 0x3130434552574d4cULL /* "LMWREC01" little-endian */

static int ack_fd = -1;

static void say(const char *fmt, ...) {
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  int fd = ack_fd >= 0 ? ack_fd : 1;
  const char *p = line;
  while (n > 0) {
    ssize_t w = write(fd, p, (size_t)n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= (int)w;
  }
  /* The line has left the guest (the UART's buffer is empty) before the next write is issued. */
  if (ack_fd >= 0) tcdrain(ack_fd);
}

static void power_off(void) {
  sync();
  reboot(RB_POWER_OFF);
  reboot(RB_AUTOBOOT); /* QEMU runs with -no-reboot: a reboot ends it too */
  for (;;) pause();
}

static void die(const char *fmt, ...) {
  char text[200];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  dprintf(2, "writer: %s\n", text);
  say("ERR %s", text);
  power_off();
}

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320U ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t crc32_ieee(const unsigned char *p, size_t n) {
  uint32_t c = 0xffffffffU;
  while (n--) c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffU;
}

static uint64_t xorshift64(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

struct config {
  uint64_t nonce;
  unsigned disks;
  uint64_t off, len;
  uint32_t rec;
  unsigned rate;
  int have_nonce, have_disks, have_off, have_len;
};

static int parse_u64(const char *s, int base, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, base);
  if (errno || end == s || *end) return -1;
  *out = v;
  return 0;
}

static void read_config(struct config *c) {
  char buf[4096];
  int fd = open("/proc/cmdline", O_RDONLY);
  if (fd < 0) die("cannot open /proc/cmdline: %s", strerror(errno));
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) die("cannot read /proc/cmdline");
  buf[n] = 0;
  memset(c, 0, sizeof *c);
  c->rec = 4096;
  for (char *save = NULL, *tok = strtok_r(buf, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
    if (strncmp(tok, "lmw.", 4) != 0) continue;
    char *eq = strchr(tok, '=');
    if (!eq) die("kernel parameter %s has no value", tok);
    *eq = 0;
    const char *key = tok + 4, *val = eq + 1;
    uint64_t v;
    if (!strcmp(key, "nonce")) {
      if (parse_u64(val, 16, &v)) die("lmw.nonce=%s is not hex", val);
      c->nonce = v;
      c->have_nonce = 1;
    } else if (parse_u64(val, 10, &v)) {
      die("lmw.%s=%s is not a whole number", key, val);
    } else if (!strcmp(key, "disks")) {
      c->disks = (unsigned)v;
      c->have_disks = 1;
      if (v < 1 || v > MAX_DISKS) die("lmw.disks=%s is outside 1..%d", val, MAX_DISKS);
    } else if (!strcmp(key, "off")) {
      c->off = v;
      c->have_off = 1;
    } else if (!strcmp(key, "len")) {
      c->len = v;
      c->have_len = 1;
    } else if (!strcmp(key, "rec")) {
      if (v < 512 || v > 65536 || v % 512) die("lmw.rec=%s must be a multiple of 512 in 512..65536", val);
      c->rec = (uint32_t)v;
    } else if (!strcmp(key, "rate")) {
      c->rate = (unsigned)v;
    } else {
      die("unknown kernel parameter lmw.%s", key);
    }
  }
  if (!c->have_nonce || !c->have_disks || !c->have_off || !c->have_len)
    die("lmw.nonce, lmw.disks, lmw.off and lmw.len are required");
  if (c->off % c->rec || c->len % c->rec || c->len < c->rec)
    die("lmw.off and lmw.len must be multiples of lmw.rec, the region at least one record");
}

static void open_ack_channel(void) {
  ack_fd = open("/dev/ttyS1", O_WRONLY | O_NOCTTY);
  if (ack_fd < 0) die("cannot open /dev/ttyS1: %s", strerror(errno));
  struct termios t;
  if (tcgetattr(ack_fd, &t) == 0) {
    cfmakeraw(&t);
    cfsetospeed(&t, B115200);
    cfsetispeed(&t, B115200);
    tcsetattr(ack_fd, TCSANOW, &t);
  }
}

/* Waits (up to 10 s) for /dev/vd<x> to appear: devtmpfs creates it once virtio_blk probed the disk. */
static int open_disk(unsigned d) {
  char path[32];
  snprintf(path, sizeof path, "/dev/vd%c", 'a' + d);
  for (int tries = 0; tries < 1000; tries++) {
    int fd = open(path, O_RDWR | O_DIRECT | O_DSYNC);
    if (fd >= 0) return fd;
    if (errno != ENOENT && errno != ENXIO) die("cannot open %s: %s", path, strerror(errno));
    usleep(10000);
  }
  die("%s did not appear within 10 s", path);
  return -1;
}

/* Whether a line "STOP" arrived on the console; never blocks. */
static int stop_requested(void) {
  static char line[64];
  static size_t used;
  struct pollfd p = {.fd = 0, .events = POLLIN};
  while (poll(&p, 1, 0) > 0 && (p.revents & POLLIN)) {
    char c;
    ssize_t n = read(0, &c, 1);
    if (n <= 0) return 0;
    if (c == '\n' || c == '\r') {
      line[used] = 0;
      int stop = strcmp(line, "STOP") == 0;
      used = 0;
      if (stop) return 1;
    } else if (used < sizeof line - 1) {
      line[used++] = c;
    }
  }
  return 0;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int main(void) {
  struct config c;
  crc_init();
  open_ack_channel();
  read_config(&c);
  int fds[MAX_DISKS];
  uint64_t seq[MAX_DISKS] = {0};
  for (unsigned d = 0; d < c.disks; d++) fds[d] = open_disk(d);
  for (unsigned d = 0; d < c.disks; d++) {
    struct stat st;
    off_t size = lseek(fds[d], 0, SEEK_END);
    if (fstat(fds[d], &st) != 0 || size < 0 || (uint64_t)size < c.off + c.len)
      die("/dev/vd%c is %lld bytes, too small for the region ending at %" PRIu64, 'a' + d, (long long)size,
          c.off + c.len);
  }
  unsigned char *buf;
  if (posix_memalign((void **)&buf, 4096, c.rec)) die("out of memory");
  uint64_t slots = c.len / c.rec;
  uint64_t rng = c.nonce ? c.nonce : 0x9e3779b97f4a7c15ULL;
  say("START %016" PRIx64 " %u %" PRIu64 " %" PRIu64 " %u %u", c.nonce, c.disks, c.off, c.len, c.rec, c.rate);
  uint64_t interval = c.rate ? 1000000000ULL / c.rate : 0;
  uint64_t next = now_ns();
  unsigned d = 0;
  while (!stop_requested()) {
    if (interval) {
      uint64_t t = now_ns();
      if (t < next) {
        struct timespec ts = {.tv_sec = (time_t)((next - t) / 1000000000ULL),
                              .tv_nsec = (long)((next - t) % 1000000000ULL)};
        nanosleep(&ts, NULL);
      }
      next += interval;
    }
    uint64_t s = ++seq[d];
    uint64_t offset = c.off + (xorshift64(&rng) % slots) * c.rec;
    memset(buf, 0, 48);
    put64(buf, MAGIC);
    put32(buf + 8, d);
    put32(buf + 12, c.rec);
    put64(buf + 16, s);
    put64(buf + 24, offset);
    put64(buf + 32, c.nonce);
    uint64_t fill = c.nonce ^ (s * 0x9e3779b97f4a7c15ULL) ^ ((uint64_t)d << 56) ^ 1;
    for (uint32_t i = 48; i + 8 <= c.rec - 4; i += 8) put64(buf + i, xorshift64(&fill));
    put32(buf + c.rec - 8, (uint32_t)xorshift64(&fill));
    put32(buf + c.rec - 4, crc32_ieee(buf, c.rec - 4));
    ssize_t w;
    uint64_t issued = now_ns();
    do w = pwrite(fds[d], buf, c.rec, (off_t)offset);
    while (w < 0 && errno == EINTR);
    uint64_t acked = now_ns();
    if (w != (ssize_t)c.rec)
      die("write of record %" PRIu64 " to /dev/vd%c at %" PRIu64 " failed: %s", s, 'a' + d, offset,
          w < 0 ? strerror(errno) : "short write");
    say("ACK %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, d, s, offset, acked / 1000, (acked - issued) / 1000);
    d = (d + 1) % c.disks;
  }
  say("STOPPING");
  for (unsigned k = 0; k < c.disks; k++) {
    if (fsync(fds[k]) != 0) die("fsync /dev/vd%c: %s", 'a' + k, strerror(errno));
    close(fds[k]);
    say("DONE %u %" PRIu64, k, seq[k]);
  }
  power_off();
  return 0;
}
