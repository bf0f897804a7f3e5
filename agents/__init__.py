"""One short module per faust agent: decode an event, call the core off the event loop,
encode, send. No science here."""
