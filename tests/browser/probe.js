// What the page shows of the loaded workflow, after the frontend has laid its nodes out.
// Evaluated by frontend.probe(); returns JSON-able facts only.
async () => {
  const frames = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  app.graph.setDirtyCanvas(true, true);
  await frames();  // a drawn frame: DOM widgets (text areas, image previews) have their size now
  const comboValues = (w) => {
    const values = w.options && w.options.values;
    return typeof values === "function" ? values(w) : values || [];
  };
  const nodes = app.graph.nodes.map((n) => ({
    id: n.id,
    type: n.type,
    title: n.title,
    registered: Boolean(LiteGraph.registered_node_types[n.type]),
    has_errors: Boolean(n.has_errors),
    rect: Array.from(n.boundingRect),  // [x, y, w, h] with the title bar
    size: Array.from(n.size),
    min_size: Array.from(n.computeSize()),
    widgets: (n.widgets || []).map((w) => ({
      name: w.name,
      type: w.type,
      value: w.value,
      values: w.type === "combo" ? Array.from(comboValues(w)) : null,
      min: w.options ? w.options.min : undefined,
      max: w.options ? w.options.max : undefined,
    })),
  }));
  const dialogs = Array.from(document.querySelectorAll(".p-dialog"))
    .filter((d) => d.offsetParent !== null)
    .map((d) => d.innerText.slice(0, 500));
  const prompt = await app.graphToPrompt();
  return { nodes, dialogs, output: prompt.output };
}
