// Berth UI: the only script, served from this registry (the CSP allows no
// other). Pages work without it; it only adds the copy buttons' action.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button || !navigator.clipboard) return;
  navigator.clipboard.writeText(button.dataset.copy).then(() => {
    button.textContent = "Copied";
  });
});
