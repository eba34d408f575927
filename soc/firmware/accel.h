/* What every firmware of the SoC simulation shares (accel.c): the accelerator's
 * registers, the report lines the runner parses (soc/sim.py parse_report), the end. */
#ifndef SOC_SIM_ACCEL_H
#define SOC_SIM_ACCEL_H

#include <stdint.h>

/* A register of the accelerator (byte offset from its base). */
uint32_t accel_read(uint32_t offset);
void accel_write(uint32_t offset, uint32_t value);

/* The banner the runner looks for, then "accel: ..." (its base, ID, VERSION);
 * 0 when the ID reads the magic number and the major version is the header's. */
int accel_identify(uint32_t magic, uint32_t version_offset, uint32_t major);

/* Poll until (register & mask) != 0; the polls it took, or -1 after max_polls. */
int accel_wait(uint32_t offset, uint32_t mask, uint32_t max_polls);

/* A cycle counter the firmware prints ("cycles.<name>: <value>"). */
struct accel_counter {
	const char *name;
	uint32_t offset;
};

/* The control registers both register maps share (offsets and masks from a map's
 * generated header). */
struct accel_control {
	uint32_t control, control_start, control_irq_enable;
	uint32_t status, status_done, error, irq_status, irq_enable, irq_done;
};

/* Clear ERROR and IRQ_STATUS, enable the done interrupt, start; poll STATUS.done; print
 * "polls", the interrupt's level, "error_flags" and each counter. Returns 0, or 1 when
 * done never came; *error is the ERROR register. */
int accel_start_and_report(const struct accel_control *c,
			   const struct accel_counter *counters, uint32_t n,
			   uint32_t *error);

/* Write back and drop the CPU's caches over what the DMA wrote. */
void accel_sync_caches(void);

/* "irq: <level of the accelerator's interrupt at the CPU>" (the event's status). */
void accel_report_irq(void);

/* "out[i]: 0x%08x" of each of n words at addr, then "checksum: 0x%08x" (FNV-1a of
 * their little-endian bytes). */
void accel_report_words(const volatile uint32_t *words, uint32_t n);

/* The end marker (soc/sim.py END_MARKER), the UART drained, the simulation ended. */
void accel_finish(int status);

#endif
