"""The model layer: one provider interface, with transport, limiter, retry and cache beneath it."""
