/* One token of a TokenSystem (hw/rtl/system.py) from DRAM: the job (job.h) gives the
 * channels' bases, the token and its position; the firmware writes the registers,
 * starts, polls STATUS.done, and prints the cycle counters, the token, every logit
 * and their checksum (accel.h). */
#include <stdio.h>

#include <generated/mem.h>

#include "accel.h"
#include "job.h"
#include "ternary_accel_regs.h"

#define R(name) TERNARY_ACCEL_##name

static const uint32_t base_lo[TOKEN_CHANNELS] = {
	R(PROG_BASE_LO), R(VEC_BASE_LO), R(WGT_BASE_LO),
	R(HEAD_BASE_LO), R(KV_BASE_LO), R(LOGITS_BASE_LO),
};

static const struct accel_control control = {
	R(CONTROL), R(CONTROL_START_MASK), R(CONTROL_IRQ_ENABLE_MASK),
	R(STATUS), R(STATUS_DONE_MASK), R(ERROR), R(IRQ_STATUS), R(IRQ_ENABLE),
	R(IRQ_ENABLE_DONE_MASK),
};

static const struct accel_counter counters[] = {
	{"total", R(CYCLES_TOTAL)}, {"stall", R(CYCLES_STALL)},
	{"sequencer", R(CYCLES_SEQUENCER)}, {"LOAD", R(CYCLES_LOAD)},
	{"NORM", R(CYCLES_NORM)}, {"MATMUL", R(CYCLES_MATMUL)},
	{"ROPE", R(CYCLES_ROPE)}, {"KV_WRITE", R(CYCLES_KV_WRITE)},
	{"ATTEND", R(CYCLES_ATTEND)}, {"ELEMENTWISE", R(CYCLES_ELEMENTWISE)},
	{"HEAD", R(CYCLES_HEAD)},
};

static int run(void)
{
	const volatile struct job_token *job =
		(const volatile struct job_token *)(MAIN_RAM_BASE + JOB_OFFSET);
	uint32_t i, vocab, error;

	if (accel_identify(TERNARY_ACCEL_MAGIC, R(VERSION), TERNARY_ACCEL_MAP_VERSION_MAJOR))
		return 1;
	if (job->magic != JOB_MAGIC_TOKEN) {
		printf("error: no token job at 0x%08lx\n", (unsigned long)job);
		return 1;
	}
	vocab = accel_read(R(MODEL_VOCAB));
	printf("job: token %lu at position %lu, vocabulary %lu\n",
	       (unsigned long)job->token_in, (unsigned long)job->position,
	       (unsigned long)vocab);
	for (i = 0; i < TOKEN_CHANNELS; i++) {
		accel_write(base_lo[i], job->base[i]);
		accel_write(base_lo[i] + 4, 0);
	}
	accel_write(R(TOKEN_IN), job->token_in);
	accel_write(R(POSITION), job->position);
	if (accel_start_and_report(&control, counters,
				   sizeof(counters) / sizeof(counters[0]), &error))
		return 1;
	printf("token: %lu\n", (unsigned long)accel_read(R(TOKEN)));
	accel_sync_caches();
	accel_report_words((const volatile uint32_t *)job->base[TOKEN_CHANNELS - 1], vocab);
	return error != 0;
}

int main(void)
{
	accel_finish(run());
	return 0;
}
