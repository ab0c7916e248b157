const { cleanVerbena } = require('../core/verbena');
console.log(cleanVerbena([0, 1]));
