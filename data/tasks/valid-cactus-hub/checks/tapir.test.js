const { cleanTapir } = require('../pkg/tapir');
console.log(cleanTapir([0, 1]));
