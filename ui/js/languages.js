// Languages Voxtral is trained on; an empty code lets the model detect the language.
const LANGUAGES = [
  ["", "Detect automatically"],
  ["en", "English"],
  ["fr", "French"],
  ["de", "German"],
  ["es", "Spanish"],
  ["it", "Italian"],
  ["pt", "Portuguese"],
  ["nl", "Dutch"],
  ["hi", "Hindi"],
  ["ar", "Arabic"],
];

/** Fill every `<select data-languages>` with the language choices. */
export function fillLanguageSelects(root = document) {
  for (const select of root.querySelectorAll("select[data-languages]")) {
    for (const [code, name] of LANGUAGES) select.add(new Option(name, code));
  }
}
