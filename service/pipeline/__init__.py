"""The per-image flow: the fair queue, download -> measure -> simulated GPU wait -> settle."""
