/* fedtl book: what a reader needs on a narrow screen (issue 27); tests/test_book.py measures it.
   Figures open at full size on a tap or click: on a phone a figure shrinks with the column, and
   its text with it. Printed tables (a text output with aligned columns) are marked so the
   stylesheet scrolls them sideways instead of wrapping their rows. */
document.addEventListener("DOMContentLoaded", function () {
  for (const img of document.querySelectorAll(".bd-article div.cell_output img")) {
    if (img.closest("a")) continue;
    const link = document.createElement("a");
    link.href = img.getAttribute("src");
    link.className = "fedtl-full-size";
    link.title = "Open the figure at full size";
    img.replaceWith(link);
    link.appendChild(img);
  }
  for (const pre of document.querySelectorAll(".bd-article div.cell_output pre")) {
    const aligned = pre.textContent.split("\n").filter(line => /\S {2,}\S/.test(line.trim()));
    if (aligned.length >= 3) pre.classList.add("fedtl-table");
  }
});
