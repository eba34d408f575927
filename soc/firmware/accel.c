/* Shared by the firmwares of the SoC simulation (accel.h). */
#include <stdio.h>

#include <generated/csr.h>
#include <generated/mem.h>
#include <generated/soc.h>
#include <irq.h>
#include <libbase/uart.h>
#include <system.h>

#include "accel.h"

#define END_MARKER "END ternary-accel soc-sim"

uint32_t accel_read(uint32_t offset)
{
	return *(volatile uint32_t *)(ACCEL_BASE + offset);
}

void accel_write(uint32_t offset, uint32_t value)
{
	*(volatile uint32_t *)(ACCEL_BASE + offset) = value;
}

int accel_identify(uint32_t magic, uint32_t version_offset, uint32_t major)
{
	uint32_t id = accel_read(0), version = accel_read(version_offset);
	printf("\nternary-accel soc-sim firmware\n");
	printf("accel.base: 0x%08lx\n", (unsigned long)ACCEL_BASE);
	printf("accel.id: 0x%08lx\n", (unsigned long)id);
	printf("accel.version: %lu.%lu\n", (unsigned long)(version >> 16),
	       (unsigned long)(version & 0xffff));
#ifdef CSR_ACCEL_EV_ENABLE_ADDR
	accel_ev_enable_write(1);      /* the irq line on to the CPU's controller */
#ifdef ACCEL_INTERRUPT
	/* unmasked, so the CPU's pending register shows it; interrupts stay disabled */
	irq_setmask(irq_getmask() | (1u << ACCEL_INTERRUPT));
#endif
#endif
	if (id != magic || (version >> 16) != major) {
		printf("error: not the accelerator of this firmware (magic 0x%08lx, major %lu)\n",
		       (unsigned long)magic, (unsigned long)major);
		return -1;
	}
	return 0;
}

int accel_wait(uint32_t offset, uint32_t mask, uint32_t max_polls)
{
	uint32_t polls;
	for (polls = 0; polls < max_polls; polls++)
		if (accel_read(offset) & mask)
			return (int)polls;
	return -1;
}

void accel_sync_caches(void)
{
	flush_cpu_dcache();
#ifdef CONFIG_L2_SIZE
	flush_l2_cache();
#endif
}

void accel_report_irq(void)
{
#ifdef CSR_ACCEL_EV_STATUS_ADDR
	printf("irq.line: %lu\n", (unsigned long)(accel_ev_status_read() & 1));
#ifdef ACCEL_INTERRUPT
	printf("irq.cpu_pending: %lu\n",
	       (unsigned long)((irq_pending() >> ACCEL_INTERRUPT) & 1));
#endif
#endif
}

void accel_report_words(const volatile uint32_t *words, uint32_t n)
{
	uint32_t i, hash = 0x811c9dc5u;
	for (i = 0; i < n; i++) {
		uint32_t w = words[i];
		int b;
		printf("out[%lu]: 0x%08lx\n", (unsigned long)i, (unsigned long)w);
		for (b = 0; b < 32; b += 8)
			hash = (hash ^ ((w >> b) & 0xff)) * 0x01000193u;
	}
	printf("outputs: %lu\n", (unsigned long)n);
	printf("checksum: 0x%08lx\n", (unsigned long)hash);
}

void accel_finish(int status)
{
	printf("status: %d\n", status);
	printf("%s\n", END_MARKER);
	uart_sync();
#ifdef CSR_SIM_FINISH_BASE
	sim_finish_finish_write(1);
#endif
	for (;;)
		;
}

int accel_start_and_report(const struct accel_control *c,
			   const struct accel_counter *counters, uint32_t n,
			   uint32_t *error)
{
	uint32_t i;
	int polls;

	accel_write(c->error, 0xffffffffu);
	accel_write(c->irq_status, 0xffffffffu);
	accel_write(c->irq_enable, c->irq_done);
	accel_write(c->control, c->control_irq_enable | c->control_start);

	polls = accel_wait(c->status, c->status_done, 10000000u);
	printf("polls: %d\n", polls);
	if (polls < 0) {
		printf("error: STATUS.done not set (STATUS 0x%08lx)\n",
		       (unsigned long)accel_read(c->status));
		return 1;
	}
	accel_report_irq();
	*error = accel_read(c->error);
	printf("error_flags: 0x%08lx\n", (unsigned long)*error);
	for (i = 0; i < n; i++)
		printf("cycles.%s: %lu\n", counters[i].name,
		       (unsigned long)accel_read(counters[i].offset));
	accel_write(c->irq_status, 0xffffffffu);
	return 0;
}
