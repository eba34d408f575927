/* One BitLinear layer of a LayerSystem (hw/rtl/layer_system.py) from DRAM: the job
 * (job.h) gives the layer's shape, its tokens and the channels' bases; the firmware
 * writes the registers, starts, polls STATUS.done, and prints the cycle counters, every
 * output (token-major, a 16-bit result sign-extended to a word) and their checksum
 * (accel.h). */
#include <stdio.h>

#include <generated/mem.h>

#include "accel.h"
#include "job.h"
#include "ternary_accel_layer_regs.h"

#define R(name) TERNARY_ACCEL_LAYER_##name
/* The outputs printed at most (the job is small; the buffer is on the stack's side). */
#define MAX_OUTPUTS 1024

static const uint32_t base_lo[LAYER_CHANNELS] = {
	R(ACT_BASE_LO), R(SCALE_BASE_LO), R(WGT_BASE_LO), R(OUT_BASE_LO),
};

static const struct accel_control control = {
	R(CONTROL), R(CONTROL_START_MASK), R(CONTROL_IRQ_ENABLE_MASK),
	R(STATUS), R(STATUS_DONE_MASK), R(ERROR), R(IRQ_STATUS), R(IRQ_ENABLE),
	R(IRQ_ENABLE_DONE_MASK),
};

static const struct accel_counter counters[] = {
	{"load", R(CYCLES_LOAD)}, {"run", R(CYCLES_RUN)},
	{"total", R(CYCLES_TOTAL)}, {"stall", R(CYCLES_STALL)},
};

static uint32_t outputs[MAX_OUTPUTS];

static int run(void)
{
	const volatile struct job_layer *job =
		(const volatile struct job_layer *)(MAIN_RAM_BASE + JOB_OFFSET);
	uint32_t i, t, j, r, n, engine, lanes, rows, stride, error;

	if (accel_identify(TERNARY_ACCEL_LAYER_MAGIC, R(VERSION),
			   TERNARY_ACCEL_LAYER_MAP_VERSION_MAJOR))
		return 1;
	if (job->magic != JOB_MAGIC_LAYER) {
		printf("error: no layer job at 0x%08lx\n", (unsigned long)job);
		return 1;
	}
	engine = accel_read(R(ENGINE));
	lanes = (engine & R(ENGINE_LANES_MASK)) >> R(ENGINE_LANES_SHIFT);
	rows = (engine & R(ENGINE_ROWS_MASK)) >> R(ENGINE_ROWS_SHIFT);
	stride = accel_read(R(OUT_STRIDE));
	printf("engine: %lu lanes x %lu rows\n", (unsigned long)lanes, (unsigned long)rows);
	printf("job: %lu x %lu layer, %lu tokens\n", (unsigned long)(job->tiles * rows),
	       (unsigned long)(job->beats * lanes), (unsigned long)job->tokens);
	n = job->tokens * job->tiles * rows;
	if (n > MAX_OUTPUTS) {
		printf("error: %lu outputs, the firmware prints %d at most\n",
		       (unsigned long)n, MAX_OUTPUTS);
		return 1;
	}
	for (i = 0; i < LAYER_CHANNELS; i++) {
		accel_write(base_lo[i], job->base[i]);
		accel_write(base_lo[i] + 4, 0);
	}
	accel_write(R(LAYER_SHAPE), (job->beats << R(LAYER_SHAPE_BEATS_SHIFT)) |
				    (job->tiles << R(LAYER_SHAPE_TILES_SHIFT)));
	accel_write(R(LAYER_TOKENS), job->tokens);
	if (accel_start_and_report(&control, counters,
				   sizeof(counters) / sizeof(counters[0]), &error))
		return 1;
	accel_sync_caches();
	/* OUT word t * tiles + j: token t's outputs j * rows .. (j + 1) * rows - 1 */
	for (t = 0, i = 0; t < job->tokens; t++)
		for (j = 0; j < job->tiles; j++) {
			const volatile int16_t *word = (const volatile int16_t *)
				(job->base[LAYER_CHANNELS - 1] + (t * job->tiles + j) * stride);
			for (r = 0; r < rows; r++)
				outputs[i++] = (uint32_t)(int32_t)word[r];
		}
	accel_report_words(outputs, n);
	return error != 0;
}

int main(void)
{
	accel_finish(run());
	return 0;
}
