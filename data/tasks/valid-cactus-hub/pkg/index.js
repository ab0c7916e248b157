const { loadFlint } = require('./flint');
const { cleanTapir } = require('./tapir');
