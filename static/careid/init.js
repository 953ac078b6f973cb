// NHS.UK frontend components (error summary focus, password show/hide, header menu).
// A module file, not inline script, so the Content-Security-Policy needs no exception.
import { initAll } from "../nhsuk/nhsuk-frontend.min.js";

document.body.classList.add("js-enabled", "nhsuk-frontend-supported");
initAll();
