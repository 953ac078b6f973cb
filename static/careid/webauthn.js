// The WebAuthn ceremony of a page's form[data-webauthn] ("create" to register, "get" to sign in).
// The options are the page's <script type="application/json" id="webauthn-options"> (Django's json_script:
// data the browser never runs, so the strict Content-Security-Policy needs no exception). The browser's
// answer (PublicKeyCredential.toJSON()) or the name of what went wrong goes into the form's hidden fields
// and the form is submitted as usual, CSRF token and all: the server checks it and says what went wrong,
// so this file holds no messages. Without this script the form posts nothing and the server says so.

const form = document.querySelector("form[data-webauthn]");
const optionsElement = document.getElementById("webauthn-options");

function supported(mode) {
  const credential = window.PublicKeyCredential;
  if (typeof credential !== "function" || !navigator.credentials || typeof credential.prototype.toJSON !== "function") {
    return false;
  }
  const parse = mode === "create" ? credential.parseCreationOptionsFromJSON : credential.parseRequestOptionsFromJSON;
  return typeof parse === "function";
}

function ceremony(mode, options) {
  if (mode === "create") {
    return navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) });
  }
  return navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) });
}

if (form && optionsElement) {
  const mode = form.dataset.webauthn;
  const status = form.querySelector("[data-webauthn-status]");
  let answered = false;

  form.addEventListener("submit", async (event) => {
    if (answered) {
      return;
    }
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    if (button) {
      button.disabled = true;
    }
    if (status) {
      status.textContent = "Waiting for your authenticator. Follow your browser's prompts.";
    }
    try {
      if (!supported(mode)) {
        const error = new Error("This browser cannot use WebAuthn");
        error.name = "unsupported";
        throw error;
      }
      const credential = await ceremony(mode, JSON.parse(optionsElement.textContent));
      form.elements.credential.value = JSON.stringify(credential.toJSON());
    } catch (error) {
      form.elements.client_error.value = (error && error.name) || "UnknownError";
    }
    answered = true;
    form.submit();
  });
  // From here the form runs the ceremony (before this, a click posts it as if there were no JavaScript).
  form.dataset.webauthnReady = "true";
}
