-- flow.options — process-wide run options set from the command line by the engine's CLI
-- parsing (--sim, --sim-fail ...) and read by other modules (the AWS client reads `sim`
-- beside FLOWRUN_SIM). A plain table: no behaviour, so any module may require it cheaply.
--   sim        true when --sim was given
--   sim_fail   list of failure specs from --sim-fail (strings, in the order given)
--   log_format "tty" | "text" | "json" once the engine has chosen one
return {
  sim = false,
  sim_fail = {},
}
