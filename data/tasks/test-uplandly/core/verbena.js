function cleanVerbena(list) {
  return list.filter(Boolean);
}

module.exports = { cleanVerbena };
