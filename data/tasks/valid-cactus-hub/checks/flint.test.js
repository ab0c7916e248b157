const { loadFlint } = require('../pkg/flint');
console.log(loadFlint([0, 1]));
