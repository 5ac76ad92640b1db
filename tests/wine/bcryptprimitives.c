/* A stand-in for Windows' bcryptprimitives.dll, for Wine 8 (Debian 12's),
 * which lacks it. Rust's standard library imports ProcessPrng from it (the
 * random source of HashMap's keys); every Windows since 10 has it. This one
 * fills the buffer from RtlGenRandom (advapi32's SystemFunction036), which
 * Wine has. Built by the tests' build_foreign_runners with MinGW and placed
 * beside the runner .exe (the first place Windows looks for a DLL). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
