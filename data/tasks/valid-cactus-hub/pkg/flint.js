function loadFlint(list) {
  return list.filter(Boolean);
}

module.exports = { loadFlint };
