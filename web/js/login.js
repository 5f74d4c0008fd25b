// login.js — the login page: a token, posted as a form; the server answers with a session
// cookie (HttpOnly, SameSite=Strict) and sends the browser back where it was going.
import { $ } from "./dom.js";

const q = new URLSearchParams(location.search);
$("#next").value = q.get("next") || "/";
if (q.get("failed")) $("#failed").hidden = false;
$("#token").focus();
