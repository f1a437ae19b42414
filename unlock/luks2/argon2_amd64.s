//go:build amd64 && !purego

#include "textflag.h"

// Byte shuffles that rotate each 64-bit word right by 24 and by 16 bits
// (VPSHUFB works within 128-bit lanes, so each pattern appears twice).
DATA rotr24<>+0x00(SB)/8, $0x0201000706050403
DATA rotr24<>+0x08(SB)/8, $0x0a09080f0e0d0c0b
DATA rotr24<>+0x10(SB)/8, $0x0201000706050403
DATA rotr24<>+0x18(SB)/8, $0x0a09080f0e0d0c0b
GLOBL rotr24<>(SB), (NOPTR+RODATA), $32

DATA rotr16<>+0x00(SB)/8, $0x0100070605040302
DATA rotr16<>+0x08(SB)/8, $0x09080f0e0d0c0b0a
DATA rotr16<>+0x10(SB)/8, $0x0100070605040302
DATA rotr16<>+0x18(SB)/8, $0x09080f0e0d0c0b0a
GLOBL rotr16<>(SB), (NOPTR+RODATA), $32

// BLAMKA(x, y): x = x + y + 2*lo32(x)*lo32(y) in each 64-bit lane; Y4 is
// scratch.
#define BLAMKA(x, y) \
	VPMULUDQ y, x, Y4; \
	VPADDQ   Y4, Y4, Y4; \
	VPADDQ   y, x, x; \
	VPADDQ   Y4, x, x

// GB runs the BlaMka G function on the four lanes of Y0..Y3 (a, b, c, d)
// at once: four of P's GB calls. Y5 is scratch, Y6 and Y7 the shuffles.
#define GB \
	BLAMKA(Y0, Y1); \
	VPXOR    Y0, Y3, Y3; \
	VPSHUFD  $0xb1, Y3, Y3; \
	BLAMKA(Y2, Y3); \
	VPXOR    Y2, Y1, Y1; \
	VPSHUFB  Y6, Y1, Y1; \
	BLAMKA(Y0, Y1); \
	VPXOR    Y0, Y3, Y3; \
	VPSHUFB  Y7, Y3, Y3; \
	BLAMKA(Y2, Y3); \
	VPXOR    Y2, Y1, Y1; \
	VPSRLQ   $63, Y1, Y5; \
	VPADDQ   Y1, Y1, Y1; \
	VPOR     Y5, Y1, Y1

// ROUND is P on v0..v15 in Y0..Y3 (v0-v3, v4-v7, v8-v11, v12-v15): GB down
// the columns, then rotate b, c, d by one, two, three lanes so that the
// diagonals (v0 v5 v10 v15, ...) line up, GB again, and rotate back.
#define ROUND \
	GB; \
	VPERMQ $0x39, Y1, Y1; \
	VPERMQ $0x4e, Y2, Y2; \
	VPERMQ $0x93, Y3, Y3; \
	GB; \
	VPERMQ $0x93, Y1, Y1; \
	VPERMQ $0x4e, Y2, Y2; \
	VPERMQ $0x39, Y3, Y3

// ROW applies P to the 16 consecutive words at byte offset off of AX.
#define ROW(off) \
	VMOVDQU off+0(AX), Y0; \
	VMOVDQU off+32(AX), Y1; \
	VMOVDQU off+64(AX), Y2; \
	VMOVDQU off+96(AX), Y3; \
	ROUND; \
	VMOVDQU Y0, off+0(AX); \
	VMOVDQU Y1, off+32(AX); \
	VMOVDQU Y2, off+64(AX); \
	VMOVDQU Y3, off+96(AX)

// COL applies P to column off/16: words 2c and 2c+1 of each of the eight
// rows (128 bytes apart), two rows to a register.
#define COL(off) \
	VMOVDQU off+0(AX), X0; \
	VINSERTI128 $1, off+128(AX), Y0, Y0; \
	VMOVDQU off+256(AX), X1; \
	VINSERTI128 $1, off+384(AX), Y1, Y1; \
	VMOVDQU off+512(AX), X2; \
	VINSERTI128 $1, off+640(AX), Y2, Y2; \
	VMOVDQU off+768(AX), X3; \
	VINSERTI128 $1, off+896(AX), Y3, Y3; \
	ROUND; \
	VMOVDQU X0, off+0(AX); \
	VEXTRACTI128 $1, Y0, off+128(AX); \
	VMOVDQU X1, off+256(AX); \
	VEXTRACTI128 $1, Y1, off+384(AX); \
	VMOVDQU X2, off+512(AX); \
	VEXTRACTI128 $1, Y2, off+640(AX); \
	VMOVDQU X3, off+768(AX); \
	VEXTRACTI128 $1, Y3, off+896(AX)

// func argon2PAVX2(q *argon2Block)
TEXT ·argon2PAVX2(SB), NOSPLIT, $0-8
	MOVQ q+0(FP), AX
	VMOVDQU rotr24<>(SB), Y6
	VMOVDQU rotr16<>(SB), Y7
	ROW(0)
	ROW(128)
	ROW(256)
	ROW(384)
	ROW(512)
	ROW(640)
	ROW(768)
	ROW(896)
	COL(0)
	COL(16)
	COL(32)
	COL(48)
	COL(64)
	COL(80)
	COL(96)
	COL(112)
	VZEROUPPER
	RET

// func argon2Xor3AVX2(dst, a, b, c *argon2Block)
// dst = a ^ b ^ c, 32 bytes at a time; each chunk is read before it is
// written, so dst may be any of a, b, c. dst is only written: a page of it
// never touched faults once.
TEXT ·argon2Xor3AVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), AX
	MOVQ b+16(FP), BX
	MOVQ c+24(FP), CX
	MOVQ $0, DX
xor3loop:
	VMOVDQU 0(AX)(DX*1), Y0
	VMOVDQU 32(AX)(DX*1), Y1
	VPXOR   0(BX)(DX*1), Y0, Y0
	VPXOR   32(BX)(DX*1), Y1, Y1
	VPXOR   0(CX)(DX*1), Y0, Y0
	VPXOR   32(CX)(DX*1), Y1, Y1
	VMOVDQU Y0, 0(DI)(DX*1)
	VMOVDQU Y1, 32(DI)(DX*1)
	ADDQ    $64, DX
	CMPQ    DX, $1024
	JB      xor3loop
	VZEROUPPER
	RET

// func argon2Xor4AVX2(dst, a, b, c *argon2Block)
// dst ^= a ^ b ^ c (the later passes of version 0x13).
TEXT ·argon2Xor4AVX2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ a+8(FP), AX
	MOVQ b+16(FP), BX
	MOVQ c+24(FP), CX
	MOVQ $0, DX
xor4loop:
	VMOVDQU 0(AX)(DX*1), Y0
	VMOVDQU 32(AX)(DX*1), Y1
	VPXOR   0(BX)(DX*1), Y0, Y0
	VPXOR   32(BX)(DX*1), Y1, Y1
	VPXOR   0(CX)(DX*1), Y0, Y0
	VPXOR   32(CX)(DX*1), Y1, Y1
	VPXOR   0(DI)(DX*1), Y0, Y0
	VPXOR   32(DI)(DX*1), Y1, Y1
	VMOVDQU Y0, 0(DI)(DX*1)
	VMOVDQU Y1, 32(DI)(DX*1)
	ADDQ    $64, DX
	CMPQ    DX, $1024
	JB      xor4loop
	VZEROUPPER
	RET
