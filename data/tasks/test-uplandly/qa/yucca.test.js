const { renderYucca } = require('../core/yucca');
console.log(renderYucca([0, 1]));
