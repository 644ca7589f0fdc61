"""Plugins that ship with autoglm, as examples and for use: enable one by naming it in
AUTOGLM_PLUGINS (e.g. ``autoglm_plugins.guardrail:Guardrail``)."""
