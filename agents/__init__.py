"""One module per stage: event in, core stage, event out (``step``).

The topology (:mod:`streams.topology`) names these modules; the generic runner
(:mod:`streams.runner`) decodes, applies the failure policy, counts and encodes.
"""
