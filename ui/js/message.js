// The alert box under a mode's controls: a title and an explanation, or nothing.

export function showMessage(box, title, detail = "", kind = "error") {
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = title;
  box.append(strong);
  if (detail) box.append(detail);
  box.dataset.kind = kind;
  box.hidden = false;
}

export function hideMessage(box) {
  box.hidden = true;
  box.replaceChildren();
}
