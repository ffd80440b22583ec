/* cpu.c - CPU feature detection. x86 reads cpuid leaves 1 and 7 and checks with xgetbv
 * that the OS enables the YMM/ZMM state; ARM reports what the compiler targets. */
#include "cpu.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
#endif

static orc_cpu_features g_feat;
static char g_desc[256];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) || defined(__i386__)
static unsigned long long read_xcr0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static void add(const char *name, bool on)
{
    if (!on)
        return;
    size_t len = strlen(g_desc);
    if (len + strlen(name) + 2 < sizeof g_desc) {
        if (len)
            g_desc[len++] = ' ';
        strcpy(g_desc + len, name);
    }
}

static void detect(void)
{
    orc_cpu_features *f = &g_feat;
#if defined(__x86_64__) || defined(__i386__)
    unsigned int a, b, c, d;
    unsigned int max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf >= 1 && __get_cpuid(1, &a, &b, &c, &d)) {
        bool osxsave = (c >> 27) & 1;
        unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
        bool ymm = (xcr0 & 0x6) == 0x6;
        bool zmm = ymm && (xcr0 & 0xE0) == 0xE0;
        f->avx = ymm && ((c >> 28) & 1);
        f->fma = f->avx && ((c >> 12) & 1);
        f->f16c = f->avx && ((c >> 29) & 1);
        if (max_leaf >= 7) {
            __cpuid_count(7, 0, a, b, c, d);
            f->avx2 = f->avx && ((b >> 5) & 1);
            f->avx512f = zmm && ((b >> 16) & 1);
            f->avx512dq = f->avx512f && ((b >> 17) & 1);
            f->avx512bw = f->avx512f && ((b >> 30) & 1);
            f->avx512vl = f->avx512f && ((b >> 31) & 1);
            f->avx512vbmi = f->avx512f && ((c >> 1) & 1);
            f->avx512vnni = f->avx512f && ((c >> 11) & 1);
#if defined(__x86_64__) && defined(__linux__)
            /* AMX: CPU support, OS-managed tile state (XCR0 bits 17-18), and Linux's
             * per-process permission for the 8 KiB tile data state */
            bool amx = ((d >> 24) & 1) && (((d >> 25) & 1) || ((d >> 22) & 1)) &&
                       (xcr0 & 0x60000) == 0x60000 && f->avx512bw && f->avx512vl;
            bool perm = amx && syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
            f->amx_int8 = perm && ((d >> 25) & 1);
            f->amx_bf16 = perm && ((d >> 22) & 1);
#endif
            unsigned int sub = a;
            if (sub >= 1) {
                __cpuid_count(7, 1, a, b, c, d);
                f->avxvnni = f->avx2 && ((a >> 4) & 1);
                f->avx512bf16 = f->avx512f && ((a >> 5) & 1);
            }
        }
    }
#endif
#if defined(__ARM_NEON)
    f->neon = true;
#if defined(__ARM_FEATURE_DOTPROD)
    f->dotprod = true;
#endif
#endif
    add("avx", f->avx);
    add("avx2", f->avx2);
    add("fma", f->fma);
    add("f16c", f->f16c);
    add("avx512f", f->avx512f);
    add("avx512dq", f->avx512dq);
    add("avx512bw", f->avx512bw);
    add("avx512vl", f->avx512vl);
    add("avx512vnni", f->avx512vnni);
    add("avx512bf16", f->avx512bf16);
    add("avx512vbmi", f->avx512vbmi);
    add("avxvnni", f->avxvnni);
    add("amx-int8", f->amx_int8);
    add("amx-bf16", f->amx_bf16);
    add("neon", f->neon);
    add("dotprod", f->dotprod);
}

const orc_cpu_features *orc_cpu_get(void)
{
    pthread_once(&g_once, detect);
    return &g_feat;
}

const char *orc_cpu_describe(void)
{
    pthread_once(&g_once, detect);
    return g_desc;
}
