function cleanTapir(list) {
  return list.filter(Boolean);
}

module.exports = { cleanTapir };
