function renderYucca(list) {
  return list.filter(Boolean);
}

module.exports = { renderYucca };
