"""Cost models of the accelerator: the decoder's operation and byte accounting, board
platforms, tokens/s and joules per token. Plain Python: no Amaranth."""
