/* The job block the runner (ternary-accel soc-sim) places in main RAM at
 * MAIN_RAM_BASE + JOB_OFFSET (soc/sim.py): what the firmware runs. Every field is a
 * 32-bit little-endian word; addresses are the CPU's (main RAM's). */
#ifndef SOC_SIM_JOB_H
#define SOC_SIM_JOB_H

#include <stdint.h>

/* soc/sim.py JOB_OFFSET */
#define JOB_OFFSET 0x00100000u

/* "TOK1": one token of a TokenSystem. */
#define JOB_MAGIC_TOKEN 0x314B4F54u
/* The channels with a base, in hw/host.py CHANNEL_ORDER. */
#define TOKEN_CHANNELS 6

struct job_token {
	uint32_t magic;
	uint32_t token_in;                 /* TOKEN_IN */
	uint32_t position;                 /* POSITION */
	uint32_t base[TOKEN_CHANNELS];     /* PROG, VEC, WGT, HEAD, KV, LOGITS */
};

/* "LAY1": one BitLinear layer of a LayerSystem. */
#define JOB_MAGIC_LAYER 0x3159414Cu
/* The channels with a base, in hw/layer_host.py LAYER_ORDER. */
#define LAYER_CHANNELS 4

struct job_layer {
	uint32_t magic;
	uint32_t beats;                    /* LAYER_SHAPE.beats: in_features / lanes */
	uint32_t tiles;                    /* LAYER_SHAPE.tiles: out_features / rows */
	uint32_t tokens;                   /* LAYER_TOKENS */
	uint32_t base[LAYER_CHANNELS];     /* ACT, SCALE, WGT, OUT */
};

#endif
