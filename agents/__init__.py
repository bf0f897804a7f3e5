"""The faust agents: one thin module each, adapting events to the science steps."""
