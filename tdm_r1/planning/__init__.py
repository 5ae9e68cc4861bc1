"""Real size without a GPU: predicted peak memory, FLOPs and time per step (``tdmbench plan``).

``trace`` (the storage tracker, GPU attention/autocast semantics, FLOP counting), ``workloads``
(the real transformers on any device, LoRA roles, inputs), ``steps`` (one step of each workload,
run under the tracer or for real), ``recipe`` (a training recipe's micro-step composed from
single-pass traces), ``gpus`` (public specs and throughput assumptions), ``plan`` (time, fit,
the switch that makes it fit, the report). See docs/planning.md.
"""
