// The dashboard's entry point: a hash router over four views and the API-key dialog.
//
//   #/                 jobs (?status=…&tag=…)
//   #/jobs/ID          one job
//   #/compare?ids=A,B  compare jobs (&x=step|epoch|time &log=1 &metrics=… | ?study=ID)
//   #/studies          studies;  #/studies/ID  one study
//
// A view is a function (root, {id, params}) that fills root and returns its cleanup (stop
// polling, abort streams, free charts), called before the next view renders.

import * as api from "./api.js";
import compareView from "./views/compare.js";
import jobView from "./views/job.js";
import jobsView from "./views/jobs.js";
import { studiesView, studyView } from "./views/studies.js";

const ROUTES = [
  [/^\/?$/, jobsView, "jobs"],
  [/^\/jobs\/?$/, jobsView, "jobs"],
  [/^\/jobs\/([^/]+)$/, jobView, "jobs"],
  [/^\/compare\/?$/, compareView, "compare"],
  [/^\/studies\/?$/, studiesView, "studies"],
  [/^\/studies\/([^/]+)$/, studyView, "studies"],
];

const main = document.getElementById("view");
let cleanup = null;

function route() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const [pattern, view, section] = ROUTES.find(([p]) => p.test(path)) ?? ROUTES[0];
  const id = path.match(pattern)?.[1];
  cleanup?.();
  main.replaceChildren();
  for (const name of Object.keys(main.dataset)) delete main.dataset[name]; // a view's own marks
  main.dataset.view = view.name;
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  cleanup = view(main, { id: id && decodeURIComponent(id), params: new URLSearchParams(query) });
}

// --- the API key ----------------------------------------------------------------------------

const dialog = document.getElementById("key-dialog");
const keyInput = document.getElementById("key-input");
const keyButton = document.getElementById("key-button");

function showKeyButton() {
  keyButton.hidden = !api.storedKey();
}

api.setKeyPrompt(
  (reason) =>
    new Promise((resolve) => {
      document.getElementById("key-reason").textContent = reason;
      keyInput.value = "";
      dialog.addEventListener(
        "close",
        () => {
          const key = dialog.returnValue === "ok" ? keyInput.value.trim() : "";
          resolve(key || null);
          setTimeout(showKeyButton);
        },
        { once: true },
      );
      dialog.showModal();
    }),
);

keyButton.addEventListener("click", () => {
  if (confirm("Forget the API key kept for this tab?")) {
    api.forgetKey();
    showKeyButton();
    route();
  }
});

window.addEventListener("hashchange", route);
showKeyButton();
route();
